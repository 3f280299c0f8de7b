"""Windows cut from running speech: labels by keyword times, and the spotter's grid."""

import numpy as np
import pytest

pytest.importorskip("audiomentations")

from training import windows  # noqa: E402
from training.augment import Banks  # noqa: E402
from training.speech import Utterance  # noqa: E402
from triage.features import FeatureParams  # noqa: E402
from triage.keywords import CLASSES, UNKNOWN  # noqa: E402


def test_windows_follow_the_keyword_times():
    rng = np.random.default_rng(0)
    rate = 16000
    # "speech": noise bursts, with a loud tone where the keyword is.
    audio = (rng.standard_normal(3 * rate) * 0.05).astype(np.float32)
    audio[int(1.2 * rate): int(1.6 * rate)] = np.sin(np.arange(int(0.4 * rate)) * 0.3) * 0.5
    utt = Utterance(audio, "x", "test", [("vol", 1.2, 1.6)])
    speech = [(rng.standard_normal(rate) * 0.05).astype(np.float32) for _ in range(3)]
    banks = Banks(speech=speech, music=[np.zeros(rate, np.float32) + 0.01], rirs=[np.r_[1.0, 0.2].astype(np.float32)])
    x, y = windows.build([utt] * 4, banks, FeatureParams(), seed=0, passes=1, unknown_per_utt=2, workers=1)
    assert x.shape[1:] == (FeatureParams().window_frames, FeatureParams().n_mels)
    labels = [CLASSES[i] for i in y]
    assert labels.count("vol") >= 4 and set(labels) <= {"vol", UNKNOWN}
    assert labels.count(UNKNOWN) <= 8
