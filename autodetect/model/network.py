"""Building and fine-tuning the classifier (imports TensorFlow/Keras), in the style of keras-io's
transfer-learning examples: ``build_model`` makes the network, ``freeze_backbone`` readies it for
training the new head, ``unfreeze_model`` opens the backbone's top layers for fine-tuning (BatchNorm
stays frozen) and ``compile_model`` sets a phase's optimizer, loss and metrics.
"""

from __future__ import annotations

import keras
from keras import layers

from autodetect.model.backbones import build_classifier
from autodetect.model.train_config import TrainConfig


def build_model(num_classes: int, config: TrainConfig) -> keras.Model:
    """The backbone with a new head for ``num_classes`` (``backbones.build_classifier``), as ``config`` says.

    From scratch its BatchNorm layers use ``config.bn_momentum``; pretrained, Keras' own momentum.
    """
    return build_classifier(
        config.backbone,
        num_classes,
        config.image_size,
        config.weights,
        dropout=config.dropout,
        bn_momentum=None if config.pretrained else config.bn_momentum,
        cache_dir=config.weights_cache_dir,
    )


def freeze_backbone(model: keras.Model) -> None:
    """Freeze the whole backbone: only the head trains."""
    model.get_layer("backbone").trainable = False


def unfreeze_model(model: keras.Model, fine_tune_layers: int) -> int:
    """Unfreeze the top ``fine_tune_layers`` layers of the backbone, BatchNorm excluded. Returns how many."""
    base = model.get_layer("backbone")
    base.trainable = True
    n = 0
    cut = max(0, len(base.layers) - fine_tune_layers)
    for i, layer in enumerate(base.layers):
        trainable = i >= cut and not isinstance(layer, layers.BatchNormalization)
        layer.trainable = trainable
        n += int(trainable and bool(layer.weights))
    return n


def compile_model(model: keras.Model, config: TrainConfig, lr: float) -> None:
    """AdamW at ``lr`` (weight decay from ``config``), label-smoothed cross-entropy, accuracy and top-3."""
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=lr, weight_decay=config.weight_decay),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=[
            keras.metrics.CategoricalAccuracy(name="accuracy"),
            keras.metrics.TopKCategoricalAccuracy(k=3, name="top3"),
        ],
    )

