"""Calibration arithmetic: the offline smoothing is the spotter's, counts match labels."""

import json
from types import SimpleNamespace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from training.calibrate import (
    Stream,
    allocate,
    counts,
    fire_times,
    keyword_speakers,
    rank_choice,
    recall_by_duration,
    recall_by_engine,
    smoothing_curves,
    unsure_windows,
)
from triage.features import FeatureParams
from triage.replay import CallLabel, KeywordLabel
from triage.spotter import Trigger, smooth_posteriors


def test_offline_smoothing_is_the_spotters_running_mean():
    rng = np.random.default_rng(0)
    posts = rng.random((20, 14))
    for k in (1, 2, 3, 4):
        expected = np.stack([posts[max(0, i - k + 1): i + 1].mean(axis=0) for i in range(len(posts))])
        assert np.allclose(smooth_posteriors(posts, k), expected)
    # each class its own number of windows: each column as if all had its number
    per_class = rng.integers(1, 5, 14)
    got = smooth_posteriors(posts, per_class)
    for c, k in enumerate(per_class):
        assert np.allclose(got[:, c], smooth_posteriors(posts, int(k))[:, c])


def test_counts_separate_hits_from_false_alarms():
    times = np.arange(1, 101) * 0.1
    score = np.zeros(100)
    score[25:28] = 0.9  # fires at 2.6 s, inside the labelled word (2.2–2.5 s, +1 s allowed)
    score[70:72] = 0.9  # fires at 7.1 s: nothing was said there
    label = CallLabel("a.wav", (18,), (KeywordLabel("gaz", 2.2, 2.5),))
    st = Stream("a.wav", 10.0, times, np.zeros((100, 14)), label)
    hits, total, fas, lat = counts([st], [score], "gaz", 0.5, 1.0)
    assert (hits, total, fas) == (1, 1, 1)
    assert np.isclose(lat[0], 0.1)
    assert counts([st], [score], "gaz", 0.95, 1.0)[:3] == (0, 1, 0)


def test_recall_is_split_by_the_engine_that_spoke_each_keyword(tmp_path):
    classes = ["gaz", "vol", "_unknown_"]
    times = np.arange(1, 101) * 0.1
    posts = np.zeros((100, 3))
    posts[25:28, 0] = 0.9  # gaz, said by MBROLA at 2.2–2.5 s: detected
    posts[60:62, 1] = 0.4  # vol, said by Kokoro at 5.5–5.8 s: below its threshold, missed
    posts[80:82, 0] = 0.3  # gaz again at 7.5–7.8 s, by espeak-ng: below its threshold, missed
    (tmp_path / "labels.jsonl").write_text(json.dumps({"file": "a.wav", "services": [17, 18], "keywords": [
        {"keyword": "gaz", "start": 2.2, "end": 2.5, "speaker": "mbrola:fr6"},
        {"keyword": "vol", "start": 5.5, "end": 5.8, "speaker": "kokoro:pf_dora"},
        {"keyword": "gaz", "start": 7.5, "end": 7.8, "speaker": "espeak:fr+m7"}]}) + "\n")
    speakers = keyword_speakers(tmp_path / "labels.jsonl")
    label = CallLabel("a.wav", (17, 18), (KeywordLabel("gaz", 2.2, 2.5), KeywordLabel("vol", 5.5, 5.8),
                                          KeywordLabel("gaz", 7.5, 7.8)))
    model = SimpleNamespace(keywords=["gaz", "vol"], classes=classes, thresholds={"gaz": 0.5, "vol": 0.5},
                            streaming=SimpleNamespace(refractory_s=1.0))
    free = Stream("free-000", 10.0, times, np.full((100, 3), 0.95), None)  # no labels: not counted
    by_engine = recall_by_engine(model, [Stream("a.wav", 10.0, times, posts, label), free], 1, speakers)
    assert by_engine == {"espeak": {"recall": 0.0, "instances": 1}, "kokoro": {"recall": 0.0, "instances": 1},
                         "mbrola": {"recall": 1.0, "instances": 1}}


def test_recall_is_split_by_how_long_each_keyword_lasts():
    times = np.arange(1, 101) * 0.1
    posts = np.zeros((100, 3))
    posts[25:28, 0] = 0.9  # a short gaz (0.3 s): detected
    posts[60:62, 1] = 0.4  # a 0.5 s vol: below its threshold, missed
    posts[90:92, 1] = 0.9  # a 1.2 s vol, longer than the window: detected
    label = CallLabel("a.wav", (17, 18), (KeywordLabel("gaz", 2.2, 2.5), KeywordLabel("vol", 5.5, 6.0),
                                          KeywordLabel("vol", 7.7, 8.9)))
    model = SimpleNamespace(keywords=["gaz", "vol"], classes=["gaz", "vol", "_unknown_"],
                            thresholds={"gaz": 0.5, "vol": 0.5}, streaming=SimpleNamespace(refractory_s=1.0),
                            features=FeatureParams())
    assert recall_by_duration(model, [Stream("a.wav", 10.0, times, posts, label)], 1) == {
        "0.00-0.40 s": {"recall": 1.0, "instances": 1}, "0.40-0.60 s": {"recall": 0.0, "instances": 1},
        "over 0.98 s (the window)": {"recall": 1.0, "instances": 1}}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=0, max_size=80), st.floats(0.3, 0.999), st.sampled_from([0.0, 0.25, 1.0]))
def test_fast_firing_is_exactly_the_spotters_trigger(scores, threshold, refractory):
    times = np.arange(1, len(scores) + 1) * 0.1
    trig = Trigger(threshold, refractory)
    expected = [t for t, s in zip(times, scores, strict=True) if trig.step(float(t), float(s))]
    assert fire_times(times, np.array(scores), threshold, refractory) == expected


def test_skip_mask_is_the_spotters_window_skipping(tmp_path):
    from onnx_models import loudness_model, silence, tone

    from training.calibrate import skip_mask
    from triage.keywords import CLASSES, UNKNOWN
    from triage.model import KeywordModel
    from triage.spotter import KeywordSpotter, score_rounds

    call = np.concatenate([silence(2), tone(0.8), silence(1.3), tone(0.5), silence(2.2), tone(1.7)])
    (tmp_path / "every").mkdir()
    every = KeywordModel(loudness_model(tmp_path / "every"))
    skip = {"hop_s": 0.1, "smoothing": 1, "refractory_s": 1.0, "skip_below": 0.5, "skip_windows": 2}
    skipping = KeywordModel(loudness_model(tmp_path, streaming=skip))
    raw = KeywordSpotter(every, trace=True)
    raw.feed(call)
    posts = np.stack([p for _, p, _ in raw.trace])
    s = KeywordSpotter(skipping, trace=True)
    s.push(call)
    _, scored = score_rounds(skipping, [s])
    got = np.stack([p for _, p, _ in s.trace])
    keep = skip_mask(skipping, posts, 0.5, 2)
    assert 0 < scored == keep.sum() < len(keep)
    np.testing.assert_array_equal(got[keep], posts[keep])
    assert (got[~keep, CLASSES.index(UNKNOWN)] == 1).all()


def test_the_false_alarm_budget_goes_where_it_buys_the_most_recall():
    # (threshold, recall, dev false alarms) over a grid, as `curves` gives them
    cv = {"gaz": [(0.5, 0.9, 3), (0.7, 0.8, 1), (0.9, 0.5, 0)],
          "vol": [(0.5, 0.7, 1), (0.7, 0.6, 0), (0.9, 0.6, 0)]}
    assert allocate(cv, 0) == ({"gaz": 0.9, "vol": 0.9}, {"gaz": 0.5, "vol": 0.6}, {"gaz": 0, "vol": 0})
    assert allocate(cv, 1)[0] == {"gaz": 0.7, "vol": 0.9}  # gaz gains 0.3 for one false alarm, vol only 0.1
    assert allocate(cv, 2)[0] == {"gaz": 0.7, "vol": 0.5}
    assert allocate(cv, 3)[0] == {"gaz": 0.7, "vol": 0.5}  # gaz's next point costs two more
    assert allocate(cv, 4) == ({"gaz": 0.5, "vol": 0.5}, {"gaz": 0.9, "vol": 0.7}, {"gaz": 3, "vol": 1})


def test_a_keyword_that_fires_falsely_at_any_threshold_spends_the_budget_first():
    cv = {"gaz": [(0.5, 0.9, 3), (0.7, 0.8, 1), (0.9, 0.5, 0)],
          "malaise": [(0.5, 0.4, 5), (0.9, 0.2, 2)]}  # two false alarms even at the top
    assert allocate(cv, 2) == ({"gaz": 0.9, "malaise": 0.9}, {"gaz": 0.5, "malaise": 0.2}, {"gaz": 0, "malaise": 2})
    assert allocate(cv, 3)[0] == {"gaz": 0.7, "malaise": 0.9}
    assert allocate(cv, 1)[0] == {"gaz": 0.9, "malaise": 0.9}  # over budget anyway: every keyword's least


def test_each_keyword_may_take_the_smoothing_that_buys_it_the_most_recall():
    # (threshold, recall, dev false alarms) per smoothing: gaz's brief peak wants 1 window, vol's noise 2
    by_smoothing = {1: {"gaz": [(0.5, 0.8, 0), (0.9, 0.6, 0)], "vol": [(0.5, 0.9, 2), (0.9, 0.4, 0)]},
                    2: {"gaz": [(0.5, 0.8, 0), (0.9, 0.5, 0)], "vol": [(0.5, 0.9, 1), (0.9, 0.7, 0)]}}
    settings, recalls, fas = allocate(smoothing_curves(by_smoothing, (1, 2)), 0)
    # gaz ties at 0.8 under both smoothings: the shorter one (sooner), at its higher threshold
    assert settings == {"gaz": (0.5, -1), "vol": (0.9, -2)} and recalls == {"gaz": 0.8, "vol": 0.7}
    assert allocate(smoothing_curves(by_smoothing, (1, 2)), 1)[0]["vol"] == (0.5, -2)
    assert allocate(smoothing_curves(by_smoothing, (1,)), 1)[0] == {"gaz": (0.5, -1), "vol": (0.9, -1)}


def test_operating_points_rank_by_false_alarms_then_latency_then_recall():
    points = {"slow but best recall": rank_choice(2, 2, 0.35, 0.3, 0.60),
              "fast": rank_choice(1, 2, 0.25, 0.3, 0.55),
              "over budget": rank_choice(3, 2, 0.10, 0.3, 0.90),
              "far over budget": rank_choice(9, 2, 0.10, 0.3, 0.95)}
    assert sorted(points, key=points.get, reverse=True) == ["fast", "slow but best recall", "over budget",
                                                            "far over budget"]
    assert rank_choice(2, 2, 0.25, 0.3, 0.6) > rank_choice(0, 2, 0.25, 0.3, 0.5)  # within budget: recall
    # none within the latency target: the nearest to it, before recall
    assert rank_choice(2, 2, 0.31, 0.3, 0.5) > rank_choice(2, 2, 0.45, 0.3, 0.6)


def test_held_out_calls_are_remade_when_what_they_are_made_of_changes(tmp_path, monkeypatch):
    """Cached calls are reused only while their sentences and seed are the same; a changed sentence
    count must not leave the old calls measured as the new material."""
    from training import calibrate

    made = []

    def build(data, split, count, **kw):
        return [tmp_path / f"{split}-{count}-free{int(kw.get('none_share', 0.15) * 100)}.npz"]

    def speech_calls(utts, free, banks, out, seed):
        made.append(seed)
        out.mkdir(parents=True, exist_ok=True)
        (out / "labels.jsonl").write_text("")

    monkeypatch.setattr(calibrate.speech, "build", build)
    monkeypatch.setattr(calibrate.speech, "load", lambda paths: [SimpleNamespace(words=["vol"])] * 4)
    monkeypatch.setattr(calibrate, "call_banks", lambda data, held_out: None)
    monkeypatch.setattr(calibrate, "speech_calls", speech_calls)
    monkeypatch.setattr(calibrate, "free_streams", lambda *a, **kw: [])
    monkeypatch.setattr(calibrate, "prompt_streams", lambda *a, **kw: [])
    collected = []
    monkeypatch.setattr(calibrate.synth, "collect_real", lambda data, sources: collected.append(sources))

    calibrate.material(tmp_path, "test")
    calibrate.material(tmp_path, "test")
    assert made == [32]  # built once, then reused
    # the real recordings the material is made of are converted first (each source once, cached by collect_real)
    assert collected == [tuple(calibrate.synth.REAL_SOURCES)] * 2
    monkeypatch.setattr(calibrate, "SENTENCES_WITH_KEYWORDS", calibrate.SENTENCES_WITH_KEYWORDS + 1)
    calibrate.material(tmp_path, "test")
    assert made == [32, 32]
    (tmp_path / "calls" / "test" / "recipe.json").unlink()  # calls of unknown making: remade too
    calibrate.material(tmp_path, "test")
    assert made == [32, 32, 32]


def test_material_is_built_by_one_calibration_at_a_time(tmp_path, monkeypatch):
    """Two calibrations started together must not rebuild the calls while the other reads them."""
    import threading
    import time

    from training import calibrate

    inside, seen = [], []

    def slow_build(data, split, workers):
        seen.append(len(inside))
        inside.append(split)
        time.sleep(0.2)
        inside.pop()
        return data / "calls" / split, []

    monkeypatch.setattr(calibrate, "_material", slow_build)
    monkeypatch.setattr(calibrate.synth, "collect_real", lambda data, sources: {})
    threads = [threading.Thread(target=calibrate.material, args=(tmp_path, "dev")) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [0, 0, 0]


def test_joined_streams_say_where_each_clip_lies():
    from training.calibrate import _joined

    rng = np.random.default_rng(3)
    clips = [np.full(int(n), i + 1, np.float32) for i, n in enumerate(rng.integers(800, 4000, 9))]
    got = list(_joined(clips, np.random.default_rng(5), 1.0, (0.1, 0.3)))
    assert sum(len(spans) for _, spans in got) == len(clips) and len(got) > 1
    for signal, spans in got:
        for start, end, i in spans:
            a, b = round(start * 16000), round(end * 16000)
            assert (signal[a:b] == i + 1).all() and signal[b] == 0 and (a == 0 or signal[a - 1] == 0)


def test_a_false_alarm_is_put_on_the_last_sentence_begun_before_it():
    from training.calibrate import sentence_at

    said = [(0.0, 2.1, "mbrola:fr6", "un problème électronique"), (2.9, 5.0, "espeak:m7", "une réunion")]
    assert sentence_at(said, 2.6)["sentence"] == "un problème électronique"  # fired after the words it heard
    assert sentence_at(said, 3.5) == {"speaker": "espeak:m7", "sentence": "une réunion", "sentence_start": 2.9,
                                      "sentence_end": 5.0}
    assert sentence_at([], 3.0) == {}


def test_window_skipping_may_not_push_the_detection_latency_past_the_target(tmp_path):
    from onnx_models import loudness_model

    from training.calibrate import choose_skipping
    from triage.keywords import CLASSES
    from triage.model import KeywordModel

    model = KeywordModel(loudness_model(tmp_path, thresholds={"incendie": 0.5}))
    k = CLASSES.index("incendie")
    streams = []
    for n in range(20):  # a keyword ending at window 40 + n, its posterior up from the window before
        posts = np.full((100, len(CLASSES)), 0.01)
        posts[39 + n: 42 + n, k] = 0.9
        times = np.arange(1, 101) * 0.1
        end = float(times[39 + n])
        streams.append(Stream(f"c{n}", 10.0, times, posts, CallLabel(f"c{n}", (18,), (
            KeywordLabel("incendie", end - 0.5, end),))))
    lax, rows = choose_skipping(model, streams, 0.0, 1.0)
    assert (lax["skip_windows"], lax["detections"]) == (2, 20)  # 3 would lose keywords; 2 loses none...
    assert lax["latency_p95_s"] == 0.2 and rows[0]["latency_p95_s"] == 0.0  # ...but finds them 2 hops later
    assert choose_skipping(model, streams, 0.0, 0.1)[0]["skip_windows"] == 1
    assert choose_skipping(model, streams, 0.0, 0.05)[0]["windows_scored"] == 1.0  # every window


def test_skipping_may_follow_only_the_gates_sure_rejections_when_its_unsure_ones_precede_keywords(tmp_path):
    """A keyword whose window the gate passes, after one it turned away unsure (score 0.45, threshold 0.5): a
    skip after that window loses the keyword whenever that window is scored; skipping after only the
    rejections scored below 0.45 loses none, and is chosen."""
    from onnx_models import loudness_gate, loudness_model

    from training.calibrate import choose_skipping, skipping
    from triage.keywords import CLASSES, UNKNOWN
    from triage.model import KeywordModel

    path = loudness_model(tmp_path, thresholds={"incendie": 0.5})
    loudness_gate(path, level_db=-50, threshold=0.5)
    model = KeywordModel(path)
    k = CLASSES.index("incendie")
    streams = []
    for n in range(20):
        w = 40 + n
        gate = np.zeros(100, np.float32)
        gate[w - 1], gate[w] = 0.45, 0.9
        posts = np.zeros((100, len(CLASSES)))
        posts[:, CLASSES.index(UNKNOWN)] = 1.0  # every window but the keyword's is turned away
        posts[w] = 0.0
        posts[w, k] = 0.95
        times = np.arange(1, 101) * 0.1
        streams.append(Stream(f"c{n}", 10.0, times, posts, CallLabel(f"c{n}", (18,), (
            KeywordLabel("incendie", times[w] - 0.5, times[w]),)), gate))
    every = skipping(model, streams, 0.1, 1)
    assert every["detections"] == 10
    chosen, rows = choose_skipping(model, streams, 0.0, 1.0)
    assert chosen["skip_gate_below"] < 0.45 and chosen["skip_windows"] == 1 and chosen["detections"] == 20
    assert chosen["windows_scored"] < 0.6 and {r["skip_gate_below"] for r in rows[1:]} == {1.0, 0.4, 0.3, 0.2, 0.1}


def test_dev_and_test_hear_three_builds_of_keyword_free_speech_their_calls_made_of_the_first(tmp_path, monkeypatch):
    """More keyword-free speech must not remake the dev or test calls (they are padded with the first build's
    sentences), and each build's streams get their own noise draws and names."""
    from training import calibrate

    padded, streams = [], []

    def build(data, split, count, seed=0, **kw):
        return [tmp_path / f"{split}-{count}-free{int(kw.get('none_share', 0.15) * 100)}-s{seed}.npz"]

    def load(paths):
        return [SimpleNamespace(words=["vol"], name=paths[0].name)] * 4

    def free_streams(utts, banks, seed, name, said):
        streams.append((utts[0].name, len(utts), seed, name))
        return [(f"{name}-000", None)]

    monkeypatch.setattr(calibrate.speech, "build", build)
    monkeypatch.setattr(calibrate.speech, "load", load)
    monkeypatch.setattr(calibrate, "call_banks", lambda data, held_out: None)
    monkeypatch.setattr(calibrate, "speech_calls", lambda utts, free, banks, out, seed: (
        padded.append(free[0].name), out.mkdir(parents=True, exist_ok=True), (out / "labels.jsonl").write_text("")))
    monkeypatch.setattr(calibrate, "free_streams", free_streams)
    monkeypatch.setattr(calibrate, "prompt_streams", lambda *a, **kw: [])
    monkeypatch.setattr(calibrate.synth, "collect_real", lambda data, sources: {})

    _, negatives = calibrate.material(tmp_path, "dev")
    recipe = json.loads((tmp_path / "calls" / "dev" / "recipe.json").read_text())
    assert recipe["free"] == ["dev-1500-free100-s0.npz"] and padded == ["dev-1500-free100-s0.npz"]
    assert [(u, n) for u, n, _, _ in streams] == [("dev-1500-free100-s0.npz", 3)] * 3 + \
        [("dev-1500-free100-s1.npz", 4)] * 3 + [("dev-1500-free100-s2.npz", 4)] * 3
    assert len({seed for _, _, seed, _ in streams}) == 9
    assert len({name for name, _ in negatives}) == 9 and all(name.startswith("free") for name, _ in negatives)
    _, test_negatives = calibrate.material(tmp_path, "test")
    test_recipe = json.loads((tmp_path / "calls" / "test" / "recipe.json").read_text())
    assert test_recipe["free"] == ["test-1500-free100-s0.npz"] and padded[-1] == "test-1500-free100-s0.npz"
    assert len({name for name, _ in test_negatives}) == 9
    assert not {seed for _, _, seed, _ in streams[:9]} & {seed for _, _, seed, _ in streams[9:]}


def test_the_gate_scores_a_calibration_holds_unsure_are_those_the_spotter_holds_unsure():
    """The spotter compares each float32 gate score, as a Python float, with the manifest's bounds; the
    calibration must too, or a score that rounds to a bound (0.7 in float32 is just below 0.7) falls on the
    other side of it."""
    from triage.keywords import CLASSES

    scores = np.array([0.69999, 0.7, 0.70001, 0.8, 0.9, 0.95], np.float32)
    stream = Stream("c", 0.6, np.arange(1, 7) * 0.1, np.zeros((6, len(CLASSES))), None, scores)
    got = unsure_windows(stream, 0.7, 0.9)
    np.testing.assert_array_equal(got, [0.7 <= float(g) < 0.9 for g in scores])
    assert got.tolist() == [False, False, True, True, True, False]
