"""training.tta: the wrapped model is the mean of the model's probabilities over the warped windows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx_models import STREAMING

from triage.features import FeatureParams
from triage.keywords import CLASSES
from triage.model import KeywordModel

onnx = pytest.importorskip("onnx")
from training.tta import warp_matrix, wrap  # noqa: E402


def linear_model(directory):
    """Softmax of a fixed random linear map of the whole window: its output moves with every band."""
    from onnx import TensorProto, helper, numpy_helper

    p = FeatureParams()
    rng = np.random.default_rng(3)
    w = (rng.normal(size=(p.window_frames * p.n_mels, len(CLASSES))) * 0.01).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["logmel", "shape"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probs"], axis=1)],
        "linear", [helper.make_tensor_value_info("logmel", TensorProto.FLOAT, ["N", p.window_frames, p.n_mels, 1])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", len(CLASSES)])],
        [numpy_helper.from_array(np.array([-1, p.window_frames * p.n_mels], np.int64), "shape"),
         numpy_helper.from_array(w, "w")])
    path = directory / "kws12.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what this onnxruntime loads
    onnx.save(model, path)
    path.with_suffix(".json").write_text(json.dumps({"classes": list(CLASSES), "features": p.to_dict(),
                                                     "streaming": STREAMING}))
    return path


def test_warp_by_one_is_the_identity_and_rows_sum_to_one():
    p = FeatureParams()
    assert np.array_equal(warp_matrix(p, 1.0), np.eye(p.n_mels, dtype=np.float32))
    for alpha in (0.8, 0.9, 1.1, 1.25):
        assert np.allclose(warp_matrix(p, alpha).sum(axis=1), 1.0)


def test_higher_formants_move_a_band_up():
    p = FeatureParams()
    window = np.zeros((1, p.n_mels), np.float32)
    window[0, 20] = 1.0
    up = window @ warp_matrix(p, 1.1).T
    assert np.argmax(up) > 20


def test_wrapped_model_averages_the_warped_windows(tmp_path):
    source = linear_model(tmp_path)
    alphas = [0.9, 1.1]
    wrapped = KeywordModel(wrap(source, tmp_path / "warped", alphas))
    plain = KeywordModel(source)
    p = FeatureParams()
    x = np.random.default_rng(0).normal(-40, 15, (5, p.window_frames, p.n_mels)).astype(np.float32)
    expected = np.mean([plain.predict_full(x if a == 1 else x @ warp_matrix(p, a).T) for a in [1, *alphas]], axis=0)
    assert np.allclose(wrapped.predict_full(x), expected, atol=1e-6)
    assert not np.allclose(wrapped.predict_full(x), plain.predict_full(x), atol=1e-4)


def test_no_warp_gives_the_model_unchanged(tmp_path):
    source = linear_model(tmp_path)
    p = FeatureParams()
    x = np.random.default_rng(1).normal(-40, 15, (3, p.window_frames, p.n_mels)).astype(np.float32)
    assert np.allclose(KeywordModel(wrap(source, tmp_path / "same", [])).predict_full(x),
                       KeywordModel(source).predict_full(x), atol=1e-7)
