import numpy as np
import pytest
from engine_pace import engine_keeps_pace
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx_models import loudness_model, silence, tone

from triage.model import KeywordModel, ModelError
from triage.spotter import KeywordSpotter, score_batch, score_rounds, smooth_posteriors

CALL = np.concatenate([silence(2), tone(0.8), silence(2), tone(0.5), silence(1)])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return KeywordModel(loudness_model(tmp_path_factory.mktemp("m")))


def _feed_in_chunks(spotter, x, sizes):
    out, i, k = [], 0, 0
    while i < len(x):
        n = sizes[k % len(sizes)]
        out += spotter.feed(x[i: i + n])
        i, k = i + n, k + 1
    return out


def test_one_burst_one_detection_with_its_time_and_service(model):
    dets = KeywordSpotter(model).feed(CALL)
    assert [(d.keyword, d.service) for d in dets] == [("incendie", 18), ("incendie", 18)]
    # Fired within 0.3 s of the burst's end: the window ending then holds enough of it.
    assert 2.0 < dets[0].time <= 2.8 + 0.3
    assert 4.8 < dets[1].time <= 5.3 + 0.3


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=9000), min_size=1, max_size=6))
def test_detections_do_not_depend_on_chunking(model, sizes):
    ref = KeywordSpotter(model).feed(CALL)
    assert _feed_in_chunks(KeywordSpotter(model), CALL, sizes) == ref


def test_single_samples_work(model):
    s = KeywordSpotter(model)
    x = CALL[:40000]
    out = [d for v in x for d in s.feed(np.array([v]))]
    assert out == KeywordSpotter(model).feed(x)


def test_long_continuous_sound_fires_once_per_refractory_and_rearm(model):
    # A sound that never stops stays above threshold: debounce keeps it to one detection.
    dets = KeywordSpotter(model).feed(tone(6.0))
    assert len(dets) == 1


def test_threshold_from_manifest_is_used(tmp_path):
    strict = KeywordModel(loudness_model(tmp_path, thresholds={"incendie": 0.9}))
    # The short second burst never gets the keyword above 0.9.
    dets = KeywordSpotter(strict).feed(CALL)
    assert len(dets) == 1 and dets[0].time < 3.5


def test_smoothing_delays_but_keeps_detection(tmp_path):
    smooth = KeywordModel(loudness_model(tmp_path, streaming={"hop_s": 0.1, "smoothing": 3,
                                                             "refractory_s": 1.0}))
    dets = KeywordSpotter(smooth).feed(CALL)
    assert len(dets) >= 1 and dets[0].keyword == "incendie"


def test_each_keyword_smoothed_over_its_own_windows(tmp_path, model):
    table = {k: 1 for k in model.keywords} | {"incendie": 3}
    per_keyword = KeywordModel(loudness_model(tmp_path, streaming={"hop_s": 0.1, "smoothing": table,
                                                                   "refractory_s": 1.0}))
    raw, smooth = KeywordSpotter(model, trace=True), KeywordSpotter(per_keyword, trace=True)
    _feed_in_chunks(raw, CALL, [3000, 777])
    dets = _feed_in_chunks(smooth, CALL, [1600])
    posts = np.stack([p for _, p, _ in raw.trace])
    got = np.stack([p for _, p, _ in smooth.trace])
    windows = per_keyword.streaming.smoothing_windows(model.classes)
    assert windows[model.classes.index("incendie")] == 3 and windows[model.classes.index("gaz")] == 1
    np.testing.assert_allclose(got, smooth_posteriors(posts, windows), atol=1e-6)
    assert [d.keyword for d in dets] == ["incendie", "incendie"]


@pytest.mark.parametrize("smoothing, problem", [
    (lambda kws: 0, "≥ 1"),
    (lambda kws: {"incendie": 2}, "missing"),
    (lambda kws: {k: 1 for k in kws} | {"incendie": 0}, "≥ 1"),
    (lambda kws: {k: 1 for k in kws} | {"feu": 2}, r"unknown \['feu'\]"),
])
def test_a_smoothing_table_must_name_every_keyword_with_a_whole_window(tmp_path, model, smoothing, problem):
    path = loudness_model(tmp_path, streaming={"hop_s": 0.1, "smoothing": smoothing(model.keywords),
                                               "refractory_s": 1.0})
    with pytest.raises(ModelError, match=problem):
        KeywordModel(path)


SKIPPING = {"hop_s": 0.1, "smoothing": 1, "refractory_s": 1.0, "skip_below": 0.5, "skip_windows": 2}


@pytest.fixture(scope="module")
def skipping(tmp_path_factory):
    return KeywordModel(loudness_model(tmp_path_factory.mktemp("skip"), streaming=SKIPPING))


def _scored(model, x, sizes):
    """(detections, windows the model scored, windows due) feeding `x` in chunks of `sizes`."""
    s, dets, scored, i, k = KeywordSpotter(model), [], 0, 0, 0
    while i < len(x):
        s.push(x[i: i + sizes[k % len(sizes)]])
        found, n = score_rounds(model, [s])
        dets, scored, i, k = dets + found[0], scored + n, i + sizes[k % len(sizes)], k + 1
    return dets, scored, s.windows_scored


def test_skipping_scores_a_third_of_silence_and_still_detects_each_burst(model, skipping):
    plain = KeywordSpotter(model).feed(CALL)
    dets, scored, due = _scored(skipping, CALL, [16000])
    assert [d.keyword for d in dets] == [d.keyword for d in plain] == ["incendie", "incendie"]
    # At most the two skipped windows (0.2 s) later than scoring every window.
    assert all(0 <= d.time - p.time <= 0.2 + 1e-9 for d, p in zip(dets, plain, strict=True))
    silent = KeywordSpotter(skipping)
    silent.push(silence(6))
    _, n = score_rounds(skipping, [silent])
    assert silent.windows_scored == 51 and n == 17  # one window in three


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=9000), min_size=1, max_size=6))
def test_skipped_windows_do_not_depend_on_chunking(skipping, sizes):
    assert _scored(skipping, CALL, sizes) == _scored(skipping, CALL, [len(CALL)])


@pytest.mark.parametrize("which", ["model", "skipping"])
def test_batch_scoring_equals_scoring_alone(request, which):
    model = request.getfixturevalue(which)
    calls = [CALL, np.roll(CALL, 8000), silence(7), tone(7.0)]
    alone = [KeywordSpotter(model).feed(c) for c in calls]
    spotters = [KeywordSpotter(model) for _ in calls]
    got = [[] for _ in calls]
    for i in range(0, len(CALL), 1600):  # 100 ms chunks, all calls scored together
        for s, c in zip(spotters, calls, strict=True):
            s.push(c[i: i + 1600])
        for acc, d in zip(got, score_batch(model, spotters), strict=True):
            acc.extend(d)
    assert got == alone


@pytest.mark.parametrize("x", [
    np.zeros(50_000, np.float32),
    np.ones(50_000, np.float32),  # DC offset
    np.clip(tone(3, 5.0), -1, 1),  # clipping
    np.full(50_000, 3.0e38, np.float32),  # extreme but finite
    np.random.default_rng(0).standard_normal(50_000).astype(np.float32) * 100,
])
def test_never_raises_on_valid_float_arrays(model, x):
    s = KeywordSpotter(model)
    for i in range(0, len(x), 777):
        s.feed(x[i: i + 777])
    assert s.windows_scored > 0


def test_memory_does_not_grow_with_call_length(model):
    s = KeywordSpotter(model)
    chunk = silence(60)
    sizes = []
    for _ in range(120):  # two hours of audio
        s.feed(chunk)
        sizes.append((s._ring.nbytes, len(s._frames._pending), len(s._due), len(s._recent)))
    assert sizes[10] == sizes[-1]
    assert s.time == pytest.approx(7200.0)


def test_model_without_streaming_section_is_refused(tmp_path, model):
    import json
    path = loudness_model(tmp_path)
    m = json.loads(path.with_suffix(".json").read_text())
    del m["streaming"]
    path.with_suffix(".json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="not a spotting model"):
        KeywordSpotter(KeywordModel(path))


@pytest.mark.parametrize("which", ["model", "skipping"])
def test_engine_ticks_over_many_calls_equal_each_call_alone(request, which):
    """The live engine stacks every call's new frames into one FFT and one model call per tick: the
    detections must be those of each call spotted alone, at 16 kHz PCM as the engine hands them on."""
    model = request.getfixturevalue(which)
    from triage.audio import encode
    from triage.engine import ScoringEngine

    calls = {"a": CALL, "b": np.roll(CALL, 8000), "c": silence(7), "d": tone(7.0)}
    alone = {k: KeywordSpotter(model).feed(c) for k, c in calls.items()}
    engine = ScoringEngine(model)
    for k in calls:
        engine.add(k, 16000, "f32le")
    got = {k: [] for k in calls}
    sizes = {"a": 1600, "b": 320, "c": 4000, "d": 1000}  # each line sends its own frame size
    pos = dict.fromkeys(calls, 0)
    while any(pos[k] < len(c) for k, c in calls.items()):
        for k, c in calls.items():
            if pos[k] < len(c):
                engine.receive(k, encode(c[pos[k]: pos[k] + sizes[k]], "f32le"))
                pos[k] += sizes[k]
        for k, dets in engine.tick().detections.items():
            got[k].extend(dets)
    assert {k: [(d.keyword, round(d.time, 3)) for d in v] for k, v in got.items()} == \
        {k: [(d.keyword, round(d.time, 3)) for d in v] for k, v in alone.items()}
    assert any(alone.values())


@pytest.mark.parametrize("which", ["model", "skipping"])
@pytest.mark.parametrize("rate", [8000, 11025, 16000])
def test_the_engine_takes_a_calls_audio_on_the_tick_its_next_window_completes(request, which, rate):
    windows, ticks_that_took_audio = engine_keeps_pace(request.getfixturevalue(which), CALL, rate)
    assert windows > 50 and ticks_that_took_audio <= windows + 1
