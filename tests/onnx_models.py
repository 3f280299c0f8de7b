"""Small real ONNX models built in-process (no TensorFlow), with manifests, for exact core tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from triage.features import FeatureParams
from triage.keywords import CLASSES

STREAMING = {"hop_s": 0.1, "smoothing": 1, "refractory_s": 1.0}


def loudness_model(directory: Path, keyword: str = "incendie", level_db: float = -80.0,
                   thresholds: dict | None = None, streaming: dict | None = None) -> Path:
    """A model that says `keyword` when the window's mean log-mel is above `level_db`, else silence.

    Logits: keyword = (mean - level_db), _silence_ = (level_db - mean), others = -50; so its decisions
    are exactly predictable from the audio's loudness.
    """
    import onnx
    from onnx import TensorProto, helper

    p = FeatureParams()
    n = len(CLASSES)
    k, s = CLASSES.index(keyword), CLASSES.index("_silence_")
    w = np.zeros((1, n), np.float32)
    b = np.full((n,), -50.0, np.float32)
    w[0, k], b[k] = 1.0, -level_db
    w[0, s], b[s] = -1.0, level_db
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["logmel", "axes"], ["m"], keepdims=0),
            helper.make_node("Reshape", ["m", "shape"], ["m2"]),
            helper.make_node("MatMul", ["m2", "w"], ["z"]),
            helper.make_node("Add", ["z", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        ],
        "loudness",
        [helper.make_tensor_value_info("logmel", TensorProto.FLOAT, ["N", p.window_frames, p.n_mels, 1])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", n])],
        [helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3]),
         helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 1]),
         helper.make_tensor("w", TensorProto.FLOAT, [1, n], w.ravel().tolist()),
         helper.make_tensor("b", TensorProto.FLOAT, [n], b.tolist())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    path = directory / "loud.onnx"
    onnx.save(model, str(path))
    manifest = {"format_version": 1, "name": "loudness-test", "classes": list(CLASSES), "features": p.to_dict(),
                "streaming": streaming or STREAMING, "thresholds": thresholds or {}}
    path.with_suffix(".json").write_text(json.dumps(manifest, ensure_ascii=False))
    return path


def loudness_gate(model_path: Path, level_db: float, threshold: float = 0.5, sha256: str | None = None) -> Path:
    """Give the model beside `model_path` a gate scoring sigmoid(mean log-mel - level_db): windows louder than
    `level_db` pass it at threshold 0.5."""
    import onnx
    from onnx import TensorProto, helper

    p = FeatureParams()
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["logmel", "axes"], ["m"], keepdims=0),
            helper.make_node("Reshape", ["m", "shape"], ["m2"]),
            helper.make_node("Sub", ["m2", "level"], ["z"]),
            helper.make_node("Sigmoid", ["z"], ["probs"]),
        ],
        "loudness_gate",
        [helper.make_tensor_value_info("logmel", TensorProto.FLOAT, ["N", p.window_frames, p.n_mels, 1])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3]),
         helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 1]),
         helper.make_tensor("level", TensorProto.FLOAT, [1], [level_db])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    path = model_path.with_name(model_path.stem + "_gate.onnx")
    onnx.save(model, str(path))
    mpath = model_path.with_suffix(".json")
    manifest = json.loads(mpath.read_text(encoding="utf-8"))
    manifest["gate"] = {"file": path.name, "threshold": threshold, **({"sha256": sha256} if sha256 else {})}
    mpath.write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
    return path


def tone(seconds: float, amplitude: float = 0.3, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * 700 * t)).astype(np.float32)


def silence(seconds: float, rate: int = 16000) -> np.ndarray:
    return np.zeros(int(seconds * rate), np.float32)
