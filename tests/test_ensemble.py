"""Keyword networks served as one: the ensemble's head is the members' logit average, adaptable as any."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx_models import loudness_model

from training.ensemble import EnsembleError, combine
from training.export import DEFAULT_STREAMING
from triage.adapt import read_head
from triage.features import FeatureParams
from triage.model import KeywordModel


def _members(tmp_path):
    paths = []
    for i, (kw, level) in enumerate((("incendie", -60.0), ("gaz", -40.0))):
        d = tmp_path / f"m{i}"
        d.mkdir()
        paths.append(loudness_model(d, keyword=kw, level_db=level, thresholds={kw: 0.9}))
    # the second member names its input otherwise, as another exporter may
    proto = onnx.load(str(paths[1]))
    proto.graph.input[0].name = "features"
    for n in proto.graph.node:
        n.input[:] = ["features" if x == "logmel" else x for x in n.input]
    onnx.save(proto, str(paths[1]))
    return paths


def _probs(path, x):
    session = ort.InferenceSession(str(path))
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_the_ensemble_is_the_members_logit_average_under_one_head(tmp_path):
    members = _members(tmp_path)
    model, manifest = combine(members)
    out = tmp_path / "ens" / "kws12.onnx"
    out.parent.mkdir()
    onnx.save(model, str(out))
    out.with_suffix(".json").write_text(json.dumps(manifest))
    p = FeatureParams()
    rng = np.random.default_rng(0)
    # windows from quiet to loud, so both members' logits pass near their levels, where softmax is not saturated
    level = np.linspace(-70, -30, 41)[:, None, None, None]
    x = (level + rng.normal(0, 3, (41, p.window_frames, p.n_mels, 1))).astype(np.float32)
    logits = np.mean([np.log(_probs(m, x)) for m in members], axis=0)
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    assert np.allclose(_probs(out, x), expected, atol=1e-5)
    assert read_head(out)[1].weights.shape == (2, len(manifest["classes"]))  # one head: `triage adapt` refits it
    assert [m["file"] for m in manifest["metrics"]["ensemble_members"]] == ["loud.onnx", "loud.onnx"]
    assert manifest["streaming"] == DEFAULT_STREAMING and set(manifest["thresholds"].values()) == {0.5}
    assert KeywordModel(out).classes == tuple(manifest["classes"])


def test_shares_weight_the_members_logits(tmp_path):
    members = _members(tmp_path)
    model, manifest = combine(members, [0.75, 0.25])
    out = tmp_path / "weighted.onnx"
    onnx.save(model, str(out))
    p = FeatureParams()
    level = np.linspace(-70, -30, 41)[:, None, None, None]
    x = (level + np.random.default_rng(1).normal(0, 3, (41, p.window_frames, p.n_mels, 1))).astype(np.float32)
    logits = 0.75 * np.log(_probs(members[0], x)) + 0.25 * np.log(_probs(members[1], x))
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    assert np.allclose(_probs(out, x), expected, atol=1e-5)
    assert [m["share"] for m in manifest["metrics"]["ensemble_members"]] == [0.75, 0.25]
    assert "averaged at shares 0.75, 0.25" in manifest["metrics"]["architecture"]
    for bad in ([0.5], [0.7, 0.7], [1.0, 0.0]):
        with pytest.raises(EnsembleError, match="one positive share per member"):
            combine(members, bad)


def test_members_that_disagree_are_refused(tmp_path):
    members = _members(tmp_path)
    m = json.loads(members[1].with_suffix(".json").read_text())
    m["classes"] = m["classes"][::-1]
    members[1].with_suffix(".json").write_text(json.dumps(m))
    with pytest.raises(EnsembleError, match="classes differ"):
        combine(members)
    with pytest.raises(EnsembleError, match="at least two"):
        combine(members[:1])
    with pytest.raises(EnsembleError, match="the same network is given twice"):
        combine([members[0], members[0]])
