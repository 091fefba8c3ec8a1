"""Export a trained ``model.keras`` to LiteRT, ONNX and Core ML (imports TensorFlow/Keras).

All exports keep the model's contract: input "image", raw RGB 0-255 float32, NHWC (N, S, S, 3), the
backbone's preprocessing inside the model; output: softmax probabilities in ``classes`` order.

- TFLite: Keras 3 ``model.export(dir, format="tf_saved_model")`` -> ``tf.lite.TFLiteConverter.from_saved_model``
  (``from_keras_model`` does not accept Keras 3 models). ``quantize="dynamic"``: dynamic-range int8
  weights (``Optimize.DEFAULT`` without a representative dataset), float activations; "float16"; "none".
- ONNX: ``tf2onnx.convert.from_function`` on a ``tf.function`` with a (None, S, S, 3) signature named
  "image" (``from_keras`` expects tf.keras 2 models).
- Core ML: ``coremltools.convert`` straight from the Keras model into an ML Program (.mlpackage),
  iOS 15+, with ``ct.ImageType(name="image", shape=(1, S, S, 3), scale=1, bias=0)``: the image reaches
  the network as raw 0-255 pixels and the folded preprocessing layer (``backbones.scale_and_bias``)
  does the backbone's scaling, exactly as in TFLite/ONNX. Putting the backbone's scale/bias on the
  ImageType as well would scale twice. ``ct.ClassifierConfig(classes)`` makes it a classifier whose
  outputs are "classLabel" and "classLabel_probs".
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from autodetect.model.bundle import FILES, save_labels

QUANTIZE = ("dynamic", "float16", "none")


def _load(keras_path: str | os.PathLike) -> keras.Model:
    return keras.models.load_model(keras_path, compile=False)


def _image_size(model: keras.Model) -> int:
    shape = model.inputs[0].shape
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3:
        raise ValueError(f"expected an input of shape (None, S, S, 3), got {shape}")
    return int(shape[1])


def export_tflite(keras_path: str | os.PathLike, out_path: str | os.PathLike, quantize: str = "dynamic") -> Path:
    """Write a ``.tflite`` (see the module doc for the route and ``quantize``). Returns ``out_path``."""
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {QUANTIZE}")
    model = _load(keras_path)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="autodetect-savedmodel-") as tmp:
        saved = Path(tmp) / "saved_model"
        model.export(str(saved), format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        if quantize == "dynamic":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        elif quantize == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        flatbuffer = converter.convert()
    _atomic_write(out_path, flatbuffer)
    return out_path


def export_onnx(keras_path: str | os.PathLike, out_path: str | os.PathLike, *, opset: int = 17) -> Path:
    """Write an ``.onnx`` with a dynamic batch dimension (tf2onnx). Returns ``out_path``."""
    import tf2onnx

    model = _load(keras_path)
    size = _image_size(model)
    signature = (tf.TensorSpec((None, size, size, 3), tf.float32, name="image"),)

    @tf.function(input_signature=signature)
    def serve(image):
        return {"probs": model(image, training=False)}

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=signature, opset=opset)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(out_path, proto.SerializeToString())
    return out_path


def export_coreml(
    keras_path: str | os.PathLike,
    out_path: str | os.PathLike,
    classes: list[str],
    backbone: str,
) -> Path:
    """Write an ML Program ``.mlpackage`` classifier (iOS 15+); image input "image", scale 1, bias 0.

    Core ML can only run on macOS; on Linux check the result with ``read_coreml_spec``.
    """
    import coremltools as ct

    model = _load(keras_path)
    size = _image_size(model)
    input_name = model.inputs[0].name
    if input_name != "image":
        raise ValueError(f"the model's input is named {input_name!r}; Core ML conversion needs 'image'")
    n_out = int(model.outputs[0].shape[-1])
    if n_out != len(classes):
        raise ValueError(f"the model has {n_out} outputs but {len(classes)} classes were given")
    mlmodel = ct.convert(
        model,
        source="tensorflow",
        inputs=[
            ct.ImageType(
                name="image", shape=(1, size, size, 3), scale=1.0, bias=[0.0, 0.0, 0.0], color_layout=ct.colorlayout.RGB
            )
        ],
        classifier_config=ct.ClassifierConfig(list(classes)),
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS15,
    )
    mlmodel.short_description = f"AutoDetect car make/model classifier ({backbone}, {len(classes)} classes)"
    mlmodel.input_description["image"] = f"RGB photo of a car, {size}x{size}"
    mlmodel.user_defined_metadata["backbone"] = backbone
    mlmodel.user_defined_metadata["image_size"] = str(size)
    mlmodel.user_defined_metadata["classes"] = json.dumps(list(classes))
    out_path = Path(out_path)
    if out_path.exists():
        shutil.rmtree(out_path) if out_path.is_dir() else out_path.unlink()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    mlmodel.save(str(out_path))
    return out_path


def read_coreml_spec(path: str | os.PathLike) -> dict:
    """Input name, input shape (1, H, W, 3) and class labels (in output order) of a saved ``.mlpackage``.

    Reads the spec only (works on Linux, where Core ML cannot run predictions).
    """
    import coremltools as ct

    spec = ct.utils.load_spec(str(path))
    inp = spec.description.input[0]
    kind = inp.type.WhichOneof("Type")
    if kind == "imageType":
        channels = 1 if inp.type.imageType.colorSpace == ct.proto.FeatureTypes_pb2.ImageFeatureType.GRAYSCALE else 3
        shape = (1, int(inp.type.imageType.height), int(inp.type.imageType.width), channels)
    else:
        shape = tuple(int(d) for d in inp.type.multiArrayType.shape)
    labels: list[str] = []
    preprocessing: list[tuple[str, float]] = []
    if spec.WhichOneof("Type") == "mlProgram":
        for function in spec.mlProgram.functions.values():
            block = function.block_specializations[function.opset]
            consts = {op.outputs[0].name: op.attributes["val"] for op in block.operations if op.type == "const"}
            seen_conv = False
            for op in block.operations:
                if op.type == "classify":
                    for value in op.inputs["classes"].arguments[0].value.immediateValue.list.values:
                        labels.extend(value.immediateValue.tensor.strings.values)
                seen_conv = seen_conv or op.type.startswith("conv")
                if not seen_conv and op.type in ("mul", "add", "sub", "real_div"):
                    for arg in op.inputs.values():
                        name = arg.arguments[0].name if arg.arguments else ""
                        if name in consts:
                            preprocessing.append((op.type, _scalar(consts[name])))
    else:  # a neural network classifier
        nn = spec.neuralNetworkClassifier
        labels = list(nn.stringClassLabels.vector) or [str(i) for i in nn.int64ClassLabels.vector]
    return {
        "input_name": inp.name,
        "input_kind": kind,
        "input_shape": shape,
        "labels": labels,
        "outputs": [o.name for o in spec.description.output],
        # Scalar arithmetic applied to the image before the first convolution (ML Program only), e.g.
        # [("mul", 1/127.5), ("add", -1.0)]: the folded preprocessing, applied once.
        "preprocessing": preprocessing,
        "metadata": dict(spec.description.metadata.userDefined),
    }


def _scalar(value) -> float:
    """The first number of a MIL const (fp16/fp32 values are stored as raw bytes or floats)."""
    tensor = value.immediateValue.tensor
    if tensor.floats.values:
        return float(tensor.floats.values[0])
    if tensor.bytes.values:
        dtype = np.float16 if value.type.tensorType.dataType == 10 else np.float32  # 10: FLOAT16
        return float(np.frombuffer(tensor.bytes.values, dtype=dtype).ravel()[0])
    if tensor.ints.values:
        return float(tensor.ints.values[0])
    return float("nan")


def export_bundle(
    keras_path: str | os.PathLike,
    bundle_dir: str | os.PathLike,
    classes: list[str],
    backbone: str,
    *,
    formats: tuple[str, ...] = ("tflite",),
    **labels_extra,
) -> Path:
    """A complete bundle directory: ``model.keras`` (copied unless already there), ``labels.json`` and the
    requested ``formats`` ("tflite", "onnx", "coreml"). Returns the directory."""
    bundle_dir = Path(bundle_dir)
    bundle_dir.mkdir(parents=True, exist_ok=True)
    target = bundle_dir / FILES["keras"]
    if Path(keras_path).resolve() != target.resolve():
        shutil.copyfile(keras_path, target)
    size = _image_size(_load(target))
    exporters = {
        "tflite": lambda: export_tflite(target, bundle_dir / FILES["tflite"]),
        "onnx": lambda: export_onnx(target, bundle_dir / FILES["onnx"]),
        "coreml": lambda: export_coreml(target, bundle_dir / FILES["coreml"], classes, backbone),
    }
    for fmt in formats:
        if fmt not in exporters:
            raise ValueError(f"unknown format {fmt!r}; choose from {sorted(exporters)}")
        exporters[fmt]()
    save_labels(bundle_dir, classes, backbone=backbone, image_size=size, **labels_extra)
    return bundle_dir


def keras_predict_fn(keras_path_or_model):
    """A ``predict(images) -> probs`` for ``evaluate`` from a Keras model (compiled once, no retracing)."""
    model = keras_path_or_model if isinstance(keras_path_or_model, keras.Model) else _load(keras_path_or_model)
    size = _image_size(model)

    @tf.function(input_signature=(tf.TensorSpec((None, size, size, 3), tf.float32),), reduce_retracing=True)
    def forward(x):
        return model(x, training=False)

    def predict(images: np.ndarray) -> np.ndarray:
        return forward(tf.convert_to_tensor(np.asarray(images, np.float32))).numpy()

    return predict


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
