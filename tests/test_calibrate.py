"""Calibration arithmetic: the offline smoothing is the spotter's, counts match labels."""

import numpy as np

from training.calibrate import Stream, counts, smoothed
from triage.replay import CallLabel, KeywordLabel


def test_offline_smoothing_is_the_spotters_running_mean():
    rng = np.random.default_rng(0)
    posts = rng.random((20, 14))
    for k in (1, 2, 3, 4):
        expected = np.stack([posts[max(0, i - k + 1): i + 1].mean(axis=0) for i in range(len(posts))])
        assert np.allclose(smoothed(posts, k), expected)


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
