"""training.robustness: the peak posterior around a keyword, on a real ONNX model whose answer is known."""

import numpy as np
import pytest

pytest.importorskip("audiomentations")

from tests.onnx_models import loudness_model, silence, tone  # noqa: E402
from training.robustness import keyword_peaks, window_ends  # noqa: E402
from triage.model import KeywordModel  # noqa: E402


def test_window_ends_follow_the_spotter_grid(tmp_path):
    model = KeywordModel(loudness_model(tmp_path))
    n_frames = model.features.n_frames(3 * 16000)
    starts, ends = window_ends(model, n_frames, hop_frames=10)
    assert starts[0] == 0 and np.all(np.diff(starts) == 10)
    assert ends[0] == pytest.approx(model.features.window_samples / 16000, abs=0.002)
    assert np.allclose(np.diff(ends), 0.1) and ends[-1] <= 3.0


def test_peaks_find_the_word_where_it_is_said_and_not_elsewhere(tmp_path):
    model = KeywordModel(loudness_model(tmp_path, keyword="incendie", level_db=-97.0))
    audio = np.concatenate([silence(1.0), tone(0.5), silence(2.5)]).astype(np.float32)
    said, unsaid = keyword_peaks(model, audio, [("incendie", 1.0, 1.5), ("incendie", 3.0, 3.3)])
    assert said > 0.99 and unsaid < 0.01
    assert keyword_peaks(model, silence(0.5).astype(np.float32), [("incendie", 0.1, 0.3)]) == [0.0]
