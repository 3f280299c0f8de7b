"""The embedding classifier's window targets and contexts (training/embedding_kws.py), on plain inputs."""

import numpy as np

from training.embedding_kws import CONTEXT, IGNORE, REJECT, contexts, grid, window_target
from triage.keywords import KEYWORDS
from triage.replay import CallLabel, KeywordLabel


def _label(*words):
    return CallLabel("call.wav", (), tuple(KeywordLabel(k, s, e) for k, s, e in words))


def test_a_window_is_the_keyword_from_just_before_its_end_to_0_4_s_after():
    label = _label(("gaz", 2.0, 2.4))
    assert window_target(label, 2.3) == KEYWORDS.index("gaz")
    assert window_target(label, 2.8) == KEYWORDS.index("gaz")
    assert window_target(label, 2.2) == IGNORE  # partly heard
    assert window_target(label, 2.9) == IGNORE  # a firing here would still be a hit
    assert window_target(label, 1.9) == REJECT
    assert window_target(label, 3.1) == REJECT
    assert window_target(None, 2.3) == REJECT


def test_close_keywords_each_keep_their_windows_and_the_earlier_one_wins_where_they_overlap():
    label = _label(("vol", 1.0, 1.3), ("incendie", 1.4, 1.9))
    assert window_target(label, 1.6) == KEYWORDS.index("vol")
    assert window_target(label, 1.85) == KEYWORDS.index("incendie")
    overlapping = _label(("vol", 1.0, 1.3), ("incendie", 1.35, 1.6))
    assert window_target(overlapping, 1.55) == KEYWORDS.index("vol")  # heard whole; incendie not yet ended
    assert window_target(overlapping, 1.75) == KEYWORDS.index("incendie")


def test_contexts_hold_each_window_with_the_ones_before_it():
    emb = np.arange(8 * 96, dtype=np.float32).reshape(8, 96)
    c = contexts(emb)
    assert c.shape == (8, CONTEXT, 96)
    np.testing.assert_array_equal(c[7], emb[8 - CONTEXT:])
    np.testing.assert_array_equal(c[0], np.repeat(emb[:1], CONTEXT, axis=0))


def test_the_grid_is_the_spotters():
    np.testing.assert_allclose(grid(1.3, 0.982), [0.982, 1.082, 1.182, 1.282])
    assert len(grid(0.5, 0.982)) == 0


def test_cached_embeddings_are_made_again_when_the_same_names_hold_other_audio(tmp_path):
    from training.embedding_kws import cached

    made = []

    def make():
        made.append(1)
        return [np.full((2, 96), len(made), np.float32)]

    first = cached(tmp_path / "e.npz", ["call0.wav"], [np.ones(160, np.float32)], make)
    again = cached(tmp_path / "e.npz", ["call0.wav"], [np.ones(160, np.float32)], make)
    rebuilt = cached(tmp_path / "e.npz", ["call0.wav"], [np.zeros(160, np.float32)], make)
    assert len(made) == 2
    np.testing.assert_array_equal(again[0], first[0])
    assert rebuilt[0][0, 0] == 2
