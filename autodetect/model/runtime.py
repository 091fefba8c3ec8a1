"""The light serving runtime: LiteRT (``.tflite``) or ONNX Runtime (``.onnx``), never TensorFlow.

This module must never import TensorFlow (directly or through Keras): the inference worker loads the
model after fork, and TensorFlow hangs in forked children when the parent imported it. A unit test
checks ``"tensorflow" not in sys.modules`` after importing this module and running a model.

Every exported model takes raw RGB pixels, 0-255, float32, NHWC (input "image", shape (N, S, S, 3));
the backbone's own preprocessing is a layer inside the model. ``load_image`` is the one image loader
used for serving and evaluation.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from autodetect.model.errors import ModelArtifactError

ImageSource = str | os.PathLike | bytes | Image.Image


def load_image(source: ImageSource, size: int) -> np.ndarray:
    """An RGB uint8 array of shape (size, size, 3): EXIF orientation applied, squashed to a square.

    ``source`` is a path, encoded image bytes, or a PIL image. Raises ``ValueError`` for undecodable data.
    """
    try:
        if isinstance(source, Image.Image):
            img = source
        elif isinstance(source, (bytes, bytearray)):
            img = Image.open(io.BytesIO(source))
        else:
            img = Image.open(os.fspath(source))
        if img.format == "JPEG" and not isinstance(source, Image.Image):
            # Big photos (uploads): let libjpeg decode at a reduced scale, still >= 4x the target side,
            # so the result matches a full decode + resize closely. Stored photos are not affected.
            img.draft("RGB", (size * 4, size * 4))
        img = ImageOps.exif_transpose(img)
        img = img.convert("RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(img, dtype=np.uint8)
    except (OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot decode image {source if not isinstance(source, bytes) else '<bytes>'}: {e}") from e


def load_batch(sources: Sequence[ImageSource], size: int, *, workers: int = 4) -> np.ndarray:
    """Images stacked into a uint8 array (N, size, size, 3); decoded in a few threads (Pillow frees the GIL)."""
    if not sources:
        return np.zeros((0, size, size, 3), np.uint8)
    if workers <= 1 or len(sources) == 1:
        return np.stack([load_image(s, size) for s in sources])
    with ThreadPoolExecutor(max_workers=min(workers, len(sources))) as pool:
        return np.stack(list(pool.map(lambda s: load_image(s, size), sources)))


class ServingModel:
    """A classifier loaded from a ``.tflite`` or ``.onnx`` file. Thread-safe; ``predict`` takes any batch size."""

    def __init__(self, path: Path, fmt: str, image_size: int, num_classes: int, run, *, max_batch: int):
        self.path = path
        self.format = fmt
        self.image_size = image_size
        self.num_classes = num_classes
        self.max_batch = max_batch
        self.classes: list[str] | None = None  # set by ``bundle.load_serving``
        self._run = run
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | os.PathLike, *, num_threads: int | None = None, max_batch: int = 64) -> ServingModel:
        """Open ``path`` (by suffix: .tflite or .onnx). Raises ``ModelArtifactError`` if missing or corrupt."""
        path = Path(path)
        if not path.is_file():
            raise ModelArtifactError(f"model file not found: {path}")
        suffix = path.suffix.lower()
        try:
            if suffix == ".tflite":
                return cls._load_tflite(path, num_threads, max_batch)
            if suffix == ".onnx":
                return cls._load_onnx(path, num_threads, max_batch)
        except ModelArtifactError:
            raise
        except Exception as e:  # the runtimes raise ValueError/RuntimeError/their own types
            raise ModelArtifactError(f"cannot load model {path}: {type(e).__name__}: {e}") from e
        raise ModelArtifactError(f"unknown model format {suffix!r} for {path} (expected .tflite or .onnx)")

    @classmethod
    def _load_tflite(cls, path: Path, num_threads: int | None, max_batch: int) -> ServingModel:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        inp = interpreter.get_input_details()
        out = interpreter.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            raise ModelArtifactError(f"{path}: expected one input and one output, got {len(inp)} and {len(out)}")
        shape = [int(d) for d in inp[0]["shape"]]
        if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3:
            raise ModelArtifactError(f"{path}: expected an input of shape (N, S, S, 3), got {shape}")
        in_index, out_index = inp[0]["index"], out[0]["index"]
        num_classes = int(out[0]["shape"][-1])
        current = {"batch": None}

        def run(x: np.ndarray) -> np.ndarray:
            n = x.shape[0]
            if current["batch"] != n:
                interpreter.resize_tensor_input(in_index, [n, shape[1], shape[2], 3], strict=False)
                interpreter.allocate_tensors()
                current["batch"] = n
            interpreter.set_tensor(in_index, x)
            interpreter.invoke()
            return interpreter.get_tensor(out_index).copy()

        return cls(path, "tflite", shape[1], num_classes, run, max_batch=max_batch)

    @classmethod
    def _load_onnx(cls, path: Path, num_threads: int | None, max_batch: int) -> ServingModel:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelArtifactError(f"{path}: expected one input and one output, got {len(inputs)} and {len(outputs)}")
        shape = inputs[0].shape
        if len(shape) != 4 or not isinstance(shape[1], int) or shape[1] != shape[2] or shape[3] != 3:
            raise ModelArtifactError(f"{path}: expected an input of shape (N, S, S, 3), got {shape}")
        classes_dim = outputs[0].shape[-1]
        if not isinstance(classes_dim, int):
            raise ModelArtifactError(f"{path}: the output's class dimension is not fixed: {outputs[0].shape}")
        in_name = inputs[0].name

        def run(x: np.ndarray) -> np.ndarray:
            return session.run(None, {in_name: x})[0]

        return cls(path, "onnx", int(shape[1]), int(classes_dim), run, max_batch=max_batch)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities, float32 (N, num_classes), for images uint8/float (N, S, S, 3) RGB 0-255."""
        x = np.asarray(batch)
        if x.ndim == 3:
            x = x[None]
        s = self.image_size
        if x.ndim != 4 or x.shape[1:] != (s, s, 3):
            raise ValueError(f"expected images of shape (N, {s}, {s}, 3), got {x.shape}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.shape[0] == 0:
            return np.zeros((0, self.num_classes), np.float32)
        parts = []
        with self._lock:
            for start in range(0, x.shape[0], self.max_batch):
                parts.append(self._run(x[start : start + self.max_batch]))
        return np.concatenate(parts).astype(np.float32, copy=False)

    __call__ = predict

    def top_k(self, probs: np.ndarray, k: int = 3) -> list[list[tuple[str, float]]]:
        """The k most likely (class, probability) pairs per row; needs ``classes`` (set by load_serving)."""
        if self.classes is None:
            raise ValueError("this model has no class names; load it with bundle.load_serving")
        order = np.argsort(-probs, axis=1)[:, :k]
        return [[(self.classes[j], float(p[j])) for j in row] for p, row in zip(probs, order)]

    def __repr__(self) -> str:
        return f"ServingModel({self.path.name}, {self.format}, {self.image_size}px, {self.num_classes} classes)"
