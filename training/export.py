"""Keras → ONNX (tf2onnx) plus the manifest that makes the file a usable triage model."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np

from triage.features import FeatureParams
from triage.model import MANIFEST_VERSION, manifest_path_for

DEFAULT_STREAMING = {"hop_s": 0.1, "smoothing": 3, "refractory_s": 1.0}


def versions() -> dict:
    import keras
    import onnx
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__}


def to_onnx(model, params: FeatureParams, path: Path) -> None:
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec((None, params.window_frames, params.n_mels, 1), tf.float32, name="logmel"),)
    path.parent.mkdir(parents=True, exist_ok=True)
    # tf2onnx looks outputs up by Keras-2 style names, which Keras 3 models no longer carry.
    model.output_names = ["probs"]
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=str(path))


def to_onnx_step(model, params: FeatureParams, path: Path, hop_frames: int, lead: int = 0) -> dict:
    """The step model of a streamable ds_cnn (training/streaming.py) beside `path`, as `<stem>_step.onnx`;
    returns the manifest's `step` section naming it. `lead`: frames of zeros the serving side puts before a
    call's first frame so that hops end where windows end (a gate's, triage.spotter); they must be a whole
    number of the model's time strides, or the positions a window averages would be computed across them."""
    import hashlib

    import tensorflow as tf
    import tf2onnx

    from training.streaming import step_model, time_stride

    if lead % time_stride(model):
        raise ValueError(f"a lead of {lead} frames is not a multiple of the model's time stride {time_stride(model)}")
    step, states = step_model(model, hop_frames)
    spec = [tf.TensorSpec((None, hop_frames, params.n_mels, 1), tf.float32, name="frames"),
            *(tf.TensorSpec((None, *s.shape), tf.float32, name=s.name) for s in states)]
    step.output_names = ["probs", *(f"{s.name}_out" for s in states)]
    out = path.with_name(f"{path.stem}_step.onnx")
    tf2onnx.convert.from_keras(step, input_signature=spec, opset=17, output_path=str(out))
    return {"file": out.name, "sha256": hashlib.sha256(out.read_bytes()).hexdigest(), "hop_frames": hop_frames}


def write_manifest(onnx_path: Path, *, name: str, classes: list[str], params: FeatureParams,
                   streaming: dict | None, thresholds: dict[str, float] | None, metrics: dict,
                   provenance: dict, step: dict | None = None) -> Path:
    manifest = {
        "format_version": MANIFEST_VERSION,
        "name": name,
        "classes": list(classes),
        "features": params.to_dict(),
        "input": {"shape": [None, params.window_frames, params.n_mels, 1], "dtype": "float32",
                  "meaning": "log-mel dB frames (triage.features.LogMel) of the latest 1 s"},
        "metrics": metrics,
        "provenance": provenance,
        "versions": versions(),
    }
    if streaming is not None:
        manifest["streaming"] = streaming
    if thresholds is not None:
        manifest["thresholds"] = thresholds
    if step is not None:
        manifest["step"] = step
    out = manifest_path_for(onnx_path)
    save_manifest(out, manifest)
    return out


def save_manifest(path: Path, manifest: dict) -> None:
    """Every manifest is written this one way, so a stage that rewrites it changes only the lines it changed."""
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def keras_onnx_max_delta(model, onnx_path: Path, x: np.ndarray) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x[..., None].astype(np.float32)})[0]
    want = model.predict(x[..., None].astype(np.float32), verbose=0)
    return float(np.abs(got - want).max())
