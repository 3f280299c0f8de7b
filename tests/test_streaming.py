"""The step model of a streamable DS-CNN gives, hop by hop, what the windowed model gives per window."""

import numpy as np
import pytest

pytest.importorskip("keras")

from training import models  # noqa: E402
from training.streaming import step_model  # noqa: E402

HOP = 8


def _model(seed: int, classes: int = 14, blocks: str = models.DS_BLOCKS, pool: str = "avg"):
    """A small streamable DS-CNN whose batch norms are set from data, layer by layer, as training would
    leave them: untrained, the activations die out with depth and every window gets the same output."""
    import keras

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x = _loud_and_quiet(rng, 64 * 96).reshape(64, 96, 40)
    m = models.ds_cnn((96, 40), classes, norm_data=x, width=8, conv0_kernel=(8, 4), streamable=True, blocks=blocks,
                      pool=pool)
    for layer in m.layers:
        if layer.name.startswith("bn"):
            seen = keras.Model(m.input, layer.input).predict(x[..., None], verbose=0)
            g, b, _, _ = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.5, b.shape),
                               seen.mean(axis=(0, 1, 2)), seen.var(axis=(0, 1, 2)) + 1e-3])
    w, _ = m.get_layer("head").get_weights()
    m.get_layer("head").set_weights([w, rng.normal(0, 1, classes)])  # a zero bias would be folded away in ONNX
    return m


def _loud_and_quiet(rng, frames: int) -> np.ndarray:
    """Log-mel frames of noise whose loudness changes every 8 frames, as speech and pauses do."""
    loudness = np.repeat(rng.uniform(-40, 20, -(-frames // 8)), 8)[:frames, None]
    return (rng.normal(size=(frames, 40)) * 10 - 40 + loudness).astype(np.float32)


@pytest.mark.parametrize("transferred, pool", [(False, "avg"), (True, "avg"), (False, "max")])
def test_step_by_step_equals_every_window(transferred, pool):
    m = _model(0, pool=pool)
    if transferred:  # as the pipeline ships it: the 8-word base's body under a new head
        m, _ = models.transfer_all(m, 14)
    step, states = step_model(m, HOP)
    rng = np.random.default_rng(1)
    stream = _loud_and_quiet(rng, 96 + 8 * 12)
    held = [np.zeros((1, *s.shape), np.float32) for s in states]
    compared, spread = 0, []
    for end in range(HOP, len(stream) + 1, HOP):
        out = step.predict([stream[None, end - HOP: end, :, None], *held], verbose=0)
        posts, held = out[0], list(out[1:])
        if end >= 96:
            want = m.predict(stream[None, end - 96: end, :, None], verbose=0)
            np.testing.assert_allclose(posts, want, rtol=1e-4, atol=1e-5)
            spread.append(want[0])
            compared += 1
    assert compared == 13
    assert np.std(spread, axis=0).max() > 1e-3  # far above the tolerance: a wrong state would show


STREAMING = {"hop_s": 0.08, "smoothing": 1, "refractory_s": 1.0}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The same small network exported twice: windowed only, and windowed with its step model."""
    from training import export
    from triage.features import FeatureParams
    from triage.keywords import CLASSES

    root = tmp_path_factory.mktemp("streaming")
    params = FeatureParams()
    m = _model(2)
    common = dict(name="t", classes=list(CLASSES), params=params, streaming=STREAMING, thresholds=None,
                  metrics={}, provenance={})
    windowed = root / "windowed" / "kws.onnx"
    export.to_onnx(m, params, windowed)
    export.write_manifest(windowed, **common)
    stepped = root / "stepped" / "kws.onnx"
    export.to_onnx(m, params, stepped)
    export.write_manifest(stepped, **common, step=export.to_onnx_step(m, params, stepped, HOP))
    return windowed, stepped


def _call(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=16000 * 3) * np.repeat(rng.uniform(0, 0.3, 30), 1600)).astype(np.float32)


def _stepped_trace(model, call: np.ndarray, seed: int) -> tuple[list[float], np.ndarray]:
    from triage.spotter import KeywordSpotter

    spotter = KeywordSpotter(model, trace=True)
    cuts = np.sort(np.random.default_rng(seed).choice(len(call), 20, replace=False))
    for piece in np.split(call, cuts):
        spotter.feed(piece)
    return [t for t, *_ in spotter.trace], np.stack([p for _, p, _ in spotter.trace])


def test_the_live_core_steps_a_call_exactly_as_it_scores_windows(exported):
    """Exported to ONNX, the step model run by the spotter gives the windowed model's posteriors on
    every window of a call, however the audio is chunked."""
    from triage.model import KeywordModel
    from triage.spotter import call_windows

    windowed, stepped = exported
    model = KeywordModel(stepped)
    assert model.stepper is not None and KeywordModel(windowed).stepper is None
    call = _call(3)
    times, windows = call_windows(model, call)
    want = KeywordModel(windowed).predict(windows)
    got_times, got = _stepped_trace(model, call, 4)
    assert got_times == pytest.approx(list(times))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert want.std(axis=0).max() > 1e-3  # far above the tolerance: a wrong state would show


def test_the_live_engine_steps_a_call_on_the_tick_each_hop_completes(exported):
    """With a step model every hop is due, the ones before the first whole window included."""
    from engine_pace import engine_keeps_pace

    from triage.model import KeywordModel

    call = _call(4)
    windows, ticks_that_took_audio = engine_keeps_pace(KeywordModel(exported[1]), call, 8000)
    hops = len(call) / 16000 / STREAMING["hop_s"]
    assert windows > 10 and ticks_that_took_audio <= hops + 1


def test_a_new_head_goes_into_both_models(exported, tmp_path):
    """`triage adapt` and the pipeline's head refit rewrite the step model's head with the windowed one's."""
    import json

    from triage.adapt import read_head, step_with_head, write_model
    from triage.model import KeywordModel, manifest_path_for
    from triage.spotter import call_windows

    _, stepped = exported
    proto, head = read_head(stepped)
    rng = np.random.default_rng(5)
    w, b = rng.normal(size=head.weights.shape), rng.normal(size=head.bias.shape)
    out = tmp_path / "adapted.onnx"
    write_model(proto, head, w, b, out)
    manifest = json.loads(manifest_path_for(stepped).read_text())
    manifest["step"] = step_with_head(manifest["step"], stepped.parent, w, b, out)
    manifest_path_for(out).write_text(json.dumps(manifest))
    assert (tmp_path / "adapted_step.onnx").is_file()

    adapted = KeywordModel(out)
    call = _call(6)
    _, windows = call_windows(adapted, call)
    want = adapted.predict(windows)
    np.testing.assert_allclose(_stepped_trace(adapted, call, 7)[1], want, rtol=1e-4, atol=1e-5)
    assert np.abs(want - KeywordModel(stepped).predict(windows)).max() > 0.1  # the head did change


@pytest.mark.parametrize("change, error", [
    ({"streaming": {**STREAMING, "hop_s": 0.1}}, "hop_s of exactly 8 frames"),
    ({"streaming": {**STREAMING, "skip_below": 0.1, "skip_windows": 2}}, "no gate or window skipping"),
    ({"step": {"file": "kws_step.onnx", "sha256": "0" * 64, "hop_frames": 8}}, "sha256 differs"),
    ({"step": {"file": "missing.onnx", "hop_frames": 8}}, "step model the manifest names is missing"),
    ({"step": {"file": "kws_step.onnx"}}, "missing or has a bad field"),
])
def test_a_step_model_that_does_not_fit_is_refused_at_load(exported, tmp_path, change, error):
    import json
    import shutil

    from triage.model import KeywordModel, ModelError, manifest_path_for

    _, stepped = exported
    for f in stepped.parent.iterdir():
        shutil.copy2(f, tmp_path / f.name)
    path = tmp_path / stepped.name
    manifest = {**json.loads(manifest_path_for(path).read_text()), **change}
    manifest_path_for(path).write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match=error):
        KeywordModel(path)


GATE_STREAMING = {"hop_s": 0.1, "smoothing": 2, "refractory_s": 1.0, "skip_below": 0.3, "skip_windows": 1}


@pytest.fixture(scope="module")
def step_gated(tmp_path_factory):
    """A windowed full model behind a streamable gate, with a hop of 10 frames (so the gate's first hop starts
    4 frames before the call): exported with the windowed gate only, and with its step model too. The gate's
    threshold lies halfway between its two middle scores on a call's windows, so it turns half of them away."""
    import json

    from training import export
    from triage.features import FeatureParams
    from triage.keywords import CLASSES
    from triage.model import KeywordModel, manifest_path_for
    from triage.spotter import call_windows

    root = tmp_path_factory.mktemp("step_gate")
    params = FeatureParams()
    full, gate = _model(7), _model(8, classes=1, blocks="1x1,1x2,1x1")
    paths = []
    for name, with_step in (("windowed", False), ("stepped", True)):
        path = root / name / "kws.onnx"
        export.to_onnx(full, params, path)
        export.write_manifest(path, name="t", classes=list(CLASSES), params=params, streaming=GATE_STREAMING,
                              thresholds={k: 0.2 for k in CLASSES[:12]}, metrics={}, provenance={})
        gate_path = path.with_name("kws_gate.onnx")
        export.to_onnx(gate, params, gate_path)
        section = {"file": gate_path.name, "threshold": 0.0}
        if with_step:
            section["step"] = export.to_onnx_step(gate, params, gate_path, 10, lead=4)
        manifest = json.loads(manifest_path_for(path).read_text())
        manifest_path_for(path).write_text(json.dumps({**manifest, "gate": section}))
        paths.append(path)
    model = KeywordModel(paths[0])
    scores = np.sort(model.gate.scores(call_windows(model, _call(9))[1]))
    # Between two scores, never on one: a threshold equal to a window's score splits the two gates on the last
    # bit of their arithmetic (the step gate sums in another order), which differs from CPU to CPU.
    middle = len(scores) // 2
    threshold = float(scores[middle - 1] + scores[middle]) / 2
    for path in paths:
        manifest = json.loads(manifest_path_for(path).read_text())
        manifest["gate"]["threshold"] = threshold
        manifest_path_for(path).write_text(json.dumps(manifest))
    return tuple(paths)


def test_a_step_gate_turns_away_the_windows_the_windowed_gate_turns_away(step_gated):
    """The spotter steps the gate over every hop of a call, however the audio is chunked, and gets what scoring
    each whole window with the windowed gate gets: the same windows for the full model, the same posteriors,
    the same skips."""
    from triage.model import KeywordModel
    from triage.spotter import call_windows

    windowed, stepped = (KeywordModel(p) for p in step_gated)
    assert windowed.gate.step is None and stepped.gate.step is not None and stepped.version != windowed.version
    call = _call(9)
    _, windows = call_windows(windowed, call)
    scores = windowed.gate.scores(windows)
    assert 0.3 < np.mean(scores >= windowed.gate.threshold) < 0.7 and np.std(scores) > 1e-3
    for seed in (10, 11):
        want_times, want = _stepped_trace(windowed, call, seed)
        got_times, got = _stepped_trace(stepped, call, seed + 5)
        assert got_times == pytest.approx(want_times) and len(got_times) == len(windows)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _gated_trace(path, call: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(smoothed posteriors, gate score or NaN) of each window of the call, fed in seven pieces."""
    from triage.model import KeywordModel
    from triage.spotter import KeywordSpotter

    spotter = KeywordSpotter(KeywordModel(path), trace=True)
    for piece in np.array_split(call, 7):
        spotter.feed(piece)
    return np.stack([p for _, p, _ in spotter.trace]), np.array([g for *_, g in spotter.trace])


def _with_streaming(paths, directory, **change) -> list:
    """Copies of the models at `paths` in `directory`, their manifests' streaming section changed."""
    import json
    import shutil

    from triage.model import manifest_path_for

    copies = []
    for path in paths:
        shutil.copytree(path.parent, directory / path.parent.name)
        copies.append(directory / path.parent.name / path.name)
        manifest = json.loads(manifest_path_for(copies[-1]).read_text())
        manifest["streaming"].update(change)
        manifest_path_for(copies[-1]).write_text(json.dumps(manifest))
    return copies


def test_a_step_gate_skips_after_the_sure_rejections_the_windowed_gate_skips_after(step_gated, tmp_path):
    """With `skip_gate_below`, the step gate's spotter reads its score of each hop as the windowed gate's
    spotter reads its score of each window: the same windows scored, the same posteriors and scores, and
    more windows scored than when every window the gate turns away starts a skip. (A skip_below so low that
    only the windows the gate turns away, `_unknown_`, start skips.)"""
    from triage.model import KeywordModel
    from triage.spotter import call_windows

    call = np.concatenate([_call(9), _call(13)])
    model = KeywordModel(step_gated[0])
    sure = float(np.quantile(model.gate.scores(call_windows(model, call)[1]), 0.25))
    windowed, stepped = _with_streaming(step_gated, tmp_path / "sure", skip_below=1e-6, skip_gate_below=sure)
    (want, want_gate), (got, got_gate) = _gated_trace(windowed, call), _gated_trace(stepped, call)
    np.testing.assert_array_equal(np.isnan(got_gate), np.isnan(want_gate))
    np.testing.assert_allclose(got_gate[~np.isnan(got_gate)], want_gate[~np.isnan(want_gate)], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    every_rejection, _ = _with_streaming(step_gated, tmp_path / "every", skip_below=1e-6)
    _, every_gate = _gated_trace(every_rejection, call)
    assert np.sum(~np.isnan(every_gate)) < np.sum(~np.isnan(want_gate)) < len(want_gate)


def test_the_live_engine_steps_the_gate_on_the_tick_each_hop_completes(step_gated):
    from engine_pace import engine_keeps_pace

    from triage.model import KeywordModel

    call = _call(12)
    windows, ticks_that_took_audio = engine_keeps_pace(KeywordModel(step_gated[1]), call, 8000)
    assert windows > 10 and ticks_that_took_audio <= len(call) / 16000 / GATE_STREAMING["hop_s"] + 1


def test_a_step_gate_on_another_hop_is_refused_at_load(step_gated, tmp_path):
    import json
    import shutil

    from triage.model import KeywordModel, ModelError, manifest_path_for

    for f in step_gated[1].parent.iterdir():
        shutil.copy2(f, tmp_path / f.name)
    path = tmp_path / step_gated[1].name
    manifest = json.loads(manifest_path_for(path).read_text())
    manifest["streaming"]["hop_s"] = 0.08
    manifest_path_for(path).write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="gate's step model needs streaming.hop_s of exactly 10 frames"):
        KeywordModel(path)


def test_a_lead_across_a_time_stride_is_refused_at_export(tmp_path):
    from training import export
    from triage.features import FeatureParams

    with pytest.raises(ValueError, match="not a multiple of the model's time stride 2"):
        export.to_onnx_step(_model(8, classes=1, blocks="1x1"), FeatureParams(), tmp_path / "g.onnx", 10, lead=3)
