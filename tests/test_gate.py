"""The gate in front of the full model (triage.model.KeywordGate): windows it turns away are `_unknown_`."""

from __future__ import annotations

import numpy as np
import pytest
from onnx_models import loudness_gate, loudness_model, silence, tone

from triage.classify import classify
from triage.keywords import CLASSES, UNKNOWN
from triage.model import KeywordModel, ModelError, _OnnxNetwork
from triage.spotter import KeywordSpotter, call_windows


def _quiet_then_loud(tmp_path):
    """A loudness model with a gate between the levels of a quiet and a loud tone (both above the model's
    keyword level of -110 dB), and the windows of that call."""
    path = loudness_model(tmp_path, level_db=-110)
    call = np.concatenate([tone(1.5, amplitude=0.002), tone(1.5, amplitude=0.3)])
    _, windows = call_windows(KeywordModel(path), call)
    levels = windows.mean(axis=(1, 2))
    assert levels.min() > -110 and levels.max() - levels.min() > 20
    loudness_gate(path, level_db=float(levels.min() + levels.max()) / 2)
    return path, call, windows, levels


def test_windows_the_gate_passes_get_the_full_models_posteriors_the_others_unknown(tmp_path):
    path, _, windows, levels = _quiet_then_loud(tmp_path)
    model = KeywordModel(path)
    keep = model.gate.scores(windows) >= model.gate.threshold
    assert keep.any() and not keep.all()
    out, full = model.predict(windows), model.predict_full(windows)
    np.testing.assert_array_equal(out[keep], full[keep])
    unknown = np.zeros(len(CLASSES), np.float32)
    unknown[CLASSES.index(UNKNOWN)] = 1
    np.testing.assert_array_equal(out[~keep], np.tile(unknown, (int((~keep).sum()), 1)))
    assert full[~keep, CLASSES.index("incendie")].min() > 0.5  # the full model alone would have fired there


def test_a_quiet_call_fires_without_the_gate_and_not_with_it(tmp_path):
    path = loudness_model(tmp_path, level_db=-110)
    quiet = tone(2.0, amplitude=0.002)
    assert [d.keyword for d in KeywordSpotter(KeywordModel(path)).feed(quiet)] == ["incendie"]
    _, windows = call_windows(KeywordModel(path), quiet)
    loudness_gate(path, level_db=float(windows.mean(axis=(1, 2)).max()) + 10)
    gated = KeywordModel(path)
    assert KeywordSpotter(gated).feed(quiet) == []
    assert [d.keyword for d in KeywordSpotter(gated).feed(tone(2.0, amplitude=0.3))] == ["incendie"]


def test_a_clip_is_labelled_by_the_full_model_whatever_the_gate_says(tmp_path):
    path = loudness_model(tmp_path, level_db=-110)
    quiet = tone(0.8, amplitude=0.002)
    assert classify(KeywordModel(path), quiet).label == "incendie"
    _, windows = call_windows(KeywordModel(path), tone(2.0, amplitude=0.002))
    loudness_gate(path, level_db=float(windows.mean(axis=(1, 2)).max()) + 10)
    gated = KeywordModel(path)
    assert gated.gate is not None and not (gated.gate.scores(windows) >= gated.gate.threshold).any()
    assert classify(gated, quiet).label == "incendie"


def test_the_gate_is_part_of_the_model_version(tmp_path):
    path = loudness_model(tmp_path)
    plain = KeywordModel(path).version
    loudness_gate(path, level_db=-50)
    gated = KeywordModel(path)
    assert gated.version.startswith(plain + "+gate@") and gated.gate.path.name == "loud_gate.onnx"


def test_a_missing_or_different_gate_is_refused_by_name(tmp_path):
    path = loudness_model(tmp_path)
    gate = loudness_gate(path, level_db=-50, sha256="0" * 64)
    with pytest.raises(ModelError, match="loud_gate.onnx: not the gate the manifest was calibrated with"):
        KeywordModel(path)
    gate.unlink()
    with pytest.raises(ModelError, match="loud_gate.onnx: the gate the manifest names is missing"):
        KeywordModel(path)


def test_the_offline_gate_measurement_is_what_the_spotter_does(tmp_path):
    """training.gate.gated predicts, from every window's full-model posteriors and gate score, which windows
    the full model scores and what fires under window skipping: the live spotter must do exactly that."""
    from training.calibrate import Stream
    from training.gate import gated
    from triage.spotter import score_rounds

    skip = {"hop_s": 0.1, "smoothing": 1, "refractory_s": 1.0, "skip_below": 0.5, "skip_windows": 2}
    path = loudness_model(tmp_path, level_db=-110, streaming=skip)
    call = np.concatenate([tone(1.2, amplitude=0.002), tone(0.4, amplitude=0.3), tone(1.5, amplitude=0.002),
                           tone(0.2, amplitude=0.3), tone(2.5, amplitude=0.0)])
    model = KeywordModel(path)
    times, windows = call_windows(model, call)
    levels = windows.mean(axis=(1, 2))
    loudness_gate(path, level_db=float(np.median(levels)), threshold=0.5)
    model = KeywordModel(path)
    offline = gated(model, [Stream("c", len(call) / 16000, times, model.predict_full(windows), None)],
                    [model.gate.scores(windows)], 0.5)

    rows = []
    full = model.predict_full
    model.predict_full = lambda x: (rows.append(len(x)), full(x))[1]
    spotter = KeywordSpotter(model)
    spotter.push(call)
    found, _ = score_rounds(model, [spotter])
    assert 0 < sum(rows) < len(windows)
    assert sum(rows) == round(offline["windows_scored_by_full_model"] * len(windows))
    assert len(found[0]) == offline["false_alarms"] > 0


def test_a_window_the_gate_was_unsure_of_starts_no_skip(tmp_path):
    """With `skip_gate_below`, only the windows the gate turned away with a score below it start a skip: the
    spotter then scores more windows, exactly those training.calibrate.skip_mask predicts from each window's
    posteriors and gate score, and its trace says what the gate scored each one."""
    import json

    from training.calibrate import Stream, skip_mask, unsure_windows
    from triage.spotter import score_rounds

    skip = {"hop_s": 0.1, "smoothing": 1, "refractory_s": 1.0, "skip_below": 0.5, "skip_windows": 2}
    path = loudness_model(tmp_path, level_db=-110, streaming=skip)
    rng = np.random.default_rng(3)
    call = (rng.normal(size=16000 * 6) * np.repeat(rng.uniform(0, 0.3, 60), 1600)).astype(np.float32)
    times, windows = call_windows(KeywordModel(path), call)
    loudness_gate(path, level_db=float(np.median(windows.mean(axis=(1, 2)))), threshold=0.5)
    scores = KeywordModel(path).gate.scores(windows)
    sure = float(np.quantile(scores, 0.2))
    assert 0.01 < sure < 0.4
    scored = {}
    for below in (1.0, sure):
        manifest = json.loads(path.with_suffix(".json").read_text())
        manifest["streaming"]["skip_gate_below"] = below
        path.with_suffix(".json").write_text(json.dumps(manifest))
        model = KeywordModel(path)
        stream = Stream("c", len(call) / 16000, times, model.predict(windows), None, scores)
        keep = skip_mask(model, stream.posts, 0.5, 2, unsure_windows(stream, below, model.gate.threshold))
        spotter = KeywordSpotter(model, trace=True)
        spotter.push(call)
        _, scored[below] = score_rounds(model, [spotter])
        traced = np.array([g for *_, g in spotter.trace])
        assert scored[below] == keep.sum() and len(traced) == len(windows)
        np.testing.assert_array_equal(~np.isnan(traced), keep)
        np.testing.assert_allclose(traced[keep], scores[keep], rtol=1e-6)
    assert scored[1.0] < scored[sure] < len(windows)


def test_a_gate_score_to_skip_below_without_a_gate_is_refused_at_load(tmp_path):
    path = loudness_model(tmp_path, streaming={"hop_s": 0.1, "smoothing": 1, "refractory_s": 1.0,
                                               "skip_below": 0.1, "skip_windows": 1, "skip_gate_below": 0.2})
    with pytest.raises(ModelError, match="skip_gate_below is a gate score; this model has no gate"):
        KeywordModel(path)


@pytest.mark.parametrize("below", [float("nan"), 0.0, -0.2, 1.5])
def test_a_gate_score_to_skip_below_outside_0_1_is_refused_at_load(tmp_path, below):
    path = loudness_model(tmp_path, streaming={"hop_s": 0.1, "smoothing": 1, "refractory_s": 1.0,
                                               "skip_below": 0.1, "skip_windows": 1, "skip_gate_below": below})
    loudness_gate(path, level_db=-60.0, threshold=0.5)
    with pytest.raises(ModelError, match=r"skip_gate_below must be a gate score in \(0, 1\]"):
        KeywordModel(path)


def test_a_new_gate_skips_after_every_rejection_until_calibrated_for_it_and_the_same_gate_keeps_its_rule():
    from training.gate import replace_gate

    def manifest():
        return {"streaming": {"skip_below": 0.5, "skip_windows": 1, "skip_gate_below": 0.2},
                "gate": {"file": "kws_gate.onnx", "threshold": 0.6, "sha256": "aa"}}

    new = manifest()
    replace_gate(new, {"file": "kws_gate.onnx", "threshold": 0.0}, "bb")
    assert new["gate"] == {"file": "kws_gate.onnx", "threshold": 0.0} and new["streaming"]["skip_gate_below"] == 1.0
    assert new["streaming"]["skip_below"] == 0.5 and new["streaming"]["skip_windows"] == 1
    same = manifest()
    replace_gate(same, {"file": "kws_gate.onnx", "threshold": 0.0}, "aa")
    assert same["streaming"]["skip_gate_below"] == 0.2


def test_adapt_places_the_gate_beside_an_adapted_model_and_never_overwrites_another(tmp_path):
    from triage.adapt import AdaptError, _place_beside

    path = loudness_model(tmp_path, level_db=-110)
    gate = loudness_gate(path, level_db=-50)
    out = tmp_path / "adapted"
    out.mkdir()
    _place_beside(gate, out)
    _place_beside(gate, out)  # again: already there, the same bytes
    _place_beside(gate, tmp_path)  # its own directory
    assert (out / gate.name).read_bytes() == gate.read_bytes()
    (out / gate.name).write_bytes(b"another gate")
    with pytest.raises(AdaptError, match="another file already has this name"):
        _place_beside(gate, out)


def test_skipping_or_a_gate_without_an_unknown_class_is_refused_at_load(tmp_path):
    import json

    path = loudness_model(tmp_path, streaming={"hop_s": 0.1, "smoothing": 1, "refractory_s": 1.0,
                                               "skip_below": 0.1, "skip_windows": 2})
    manifest = json.loads(path.with_suffix(".json").read_text())
    manifest["classes"] = [c for c in manifest["classes"] if c != UNKNOWN]
    path.with_suffix(".json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="needs an _unknown_ class"):
        KeywordModel(path)


def test_a_network_whose_input_the_features_do_not_give_is_refused_at_load(tmp_path):
    """The model (and a gate, by the same code in triage.model._OnnxNetwork) is checked against the
    manifest's features, and the error names the file and the shape expected."""
    import json

    path = loudness_model(tmp_path, level_db=-110)
    manifest = json.loads(path.with_suffix(".json").read_text())
    manifest["features"]["n_mels"] = 32
    path.with_suffix(".json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match=r"loud\.onnx: input shape .* \(expected \[batch, 96, 32, 1\]\)"):
        KeywordModel(path)


def test_a_keyword_network_made_a_gate_scores_each_windows_keyword_probability_mass(tmp_path):
    from training.gate import from_network

    path = loudness_model(tmp_path)
    model = KeywordModel(path)
    from_network(path, model, tmp_path / "mass_gate.onnx")
    _, windows = call_windows(model, np.concatenate([tone(1.5), silence(1.5)]))
    full = model.predict_full(windows)
    mass = _OnnxNetwork(tmp_path / "mass_gate.onnx", 1, windows.shape[1:]).run(windows)
    assert mass.shape == (len(windows), 1)
    np.testing.assert_allclose(mass[:, 0], full[:, : len(model.keywords)].sum(axis=1), atol=1e-6)
    assert mass.min() < 0.5 < mass.max()  # the tone is a keyword to this model, the silence is not


def test_a_network_whose_classes_are_in_another_order_is_not_made_a_gate(tmp_path):
    import json

    from training.gate import from_network

    path = loudness_model(tmp_path)
    model = KeywordModel(path)
    other = tmp_path / "other"
    other.mkdir()
    (other / path.name).write_bytes(path.read_bytes())
    manifest = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    manifest["classes"][0], manifest["classes"][1] = manifest["classes"][1], manifest["classes"][0]
    (other / path.with_suffix(".json").name).write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ValueError, match="are not"):
        from_network(other / path.name, model, tmp_path / "mass_gate.onnx")
    assert not (tmp_path / "mass_gate.onnx").exists()


def test_a_trained_gate_measured_again_keeps_the_provenance_its_manifest_gave_it(tmp_path):
    import hashlib
    import json

    from training.gate import trained_gate_origin

    gate = tmp_path / "kws12_gate.onnx"
    gate.write_bytes(b"a gate network")
    sha = hashlib.sha256(gate.read_bytes()).hexdigest()
    (tmp_path / "kws12_eval.json").write_text("[1, 2]", encoding="utf-8")  # not a manifest: passed over
    (tmp_path / "old.json").write_text(json.dumps({"gate": {"sha256": "0" * 64, "method": "another gate"}}))
    (tmp_path / "odd.json").write_text(json.dumps({"gate": ["a list"]}))
    assert trained_gate_origin(gate) == f"the gate network kws12_gate.onnx (sha256 {sha[:12]})"
    (tmp_path / "kws12.json").write_text(json.dumps({"gate": {
        "sha256": sha, "method": "distilled from v7; threshold: the highest below the first that loses"}}))
    assert trained_gate_origin(gate) == "distilled from v7"
