"""Training configuration and result (imports TensorFlow/Keras through ``backbones``).

``TrainConfig`` holds every knob of a training run (see ``train`` for how the phases use them);
``TrainResult`` is what ``train.train`` returns. Both are re-exported by ``autodetect.model.train``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from autodetect.model.backbones import is_pretrained


@dataclass
class TrainConfig:
    backbone: str = "inception_v3"
    image_size: int = 224
    weights: str = "imagenet"  # "imagenet", "none", or a path to a local weights file
    epochs_head: int = 8
    epochs_finetune: int = 8
    fine_tune_layers: int = 50
    batch_size: int = 32
    lr_head: float = 1e-3
    lr_finetune: float = 1e-4
    label_smoothing: float = 0.1
    seed: int = 1337
    time_budget_s: float = 0.0  # 0: none
    bn_momentum: float = 0.9  # from scratch only
    augment: bool = True
    zoom: float = 0.25  # augmentation: the random crop's side is 1 - zoom .. 1 of the image's
    rotation: float = 0.02  # augmentation: max rotation, a share of a full turn (0.02: 7 degrees); 0 is cheaper
    colour_jitter: float = 0.15  # augmentation: random brightness and contrast factor; 0 skips both (cheaper)
    weight_decay: float = 1e-4
    dropout: float = 0.2
    patience: int = 5  # early stopping on val loss, in epochs
    warmup_share: float = 0.03  # of each phase, linear
    class_weights: bool = True  # balance classes by weighting samples n / (k * n_c)
    cache_max_bytes: int = 2 << 30  # decoded training images above this are cached on disk in out_dir
    weights_cache_dir: str | None = None  # Keras' cache root for "imagenet" (None: Keras' default)

    @property
    def pretrained(self) -> bool:
        return is_pretrained(self.weights)


@dataclass
class TrainResult:
    keras_path: Path
    epochs_run: int
    history: list[dict] = field(default_factory=list)  # one dict per epoch (phase, metrics, lr, seconds)
    train_images_per_s: float = 0.0  # steady state: epochs after the first (tracing, cache fill)
    seconds: float = 0.0
    stopped_by: str = "epochs"  # "epochs", "early_stopping" or "time_budget" (the last phase's reason)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["keras_path"] = str(self.keras_path)
        return d
