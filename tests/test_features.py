import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from triage.features import FeatureParams, LogMel, LogMelStream, mel_filterbank

P = FeatureParams()


def _noise(n, seed=0):
    return (np.random.default_rng(seed).standard_normal(n) * 0.1).astype(np.float32)


def test_matches_librosa_within_a_thousandth_of_a_db():
    librosa = pytest.importorskip("librosa")
    x = _noise(24_000)
    ours = LogMel(P).frames(x)
    mel = librosa.feature.melspectrogram(
        y=x.astype(np.float64), sr=P.sample_rate, n_fft=P.n_fft, win_length=P.win_length,
        hop_length=P.hop_length, n_mels=P.n_mels, fmin=P.fmin, fmax=P.fmax, center=False, power=2.0)
    theirs = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None).T
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() <= 1e-3


def test_filterbank_matches_librosa():
    librosa = pytest.importorskip("librosa")
    ref = librosa.filters.mel(sr=P.sample_rate, n_fft=P.n_fft, n_mels=P.n_mels, fmin=P.fmin, fmax=P.fmax)
    assert np.abs(mel_filterbank(P) - ref).max() < 1e-6


def test_one_second_window_has_the_advertised_frame_count():
    assert LogMel(P).frames(_noise(P.window_samples)).shape == (P.window_frames, P.n_mels) == (96, 40)
    assert LogMel(P).frames(_noise(P.n_fft - 1)).shape == (0, P.n_mels)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=30))
def test_stream_equals_whole_clip_for_any_chunking(sizes):
    x = _noise(sum(sizes), seed=len(sizes))
    whole = LogMel(P).frames(x)
    stream, out, i = LogMelStream(P), [], 0
    for n in sizes:
        out.append(stream.feed(x[i: i + n]))
        i += n
    got = np.concatenate(out)
    assert got.shape == whole.shape and stream.frames_emitted == len(whole)
    assert np.allclose(got, whole, rtol=0, atol=1e-4)


def test_window_cut_from_a_stream_equals_the_clip_alone():
    # The property serving relies on: frames of a 1 s window on the hop grid are the clip's frames.
    x = _noise(40_000)
    stream_frames = LogMel(P).frames(x)
    start = 37 * P.hop_length
    clip = LogMel(P).frames(x[start: start + P.window_samples])
    assert np.abs(stream_frames[37: 37 + P.window_frames] - clip).max() <= 1e-4


def test_silence_is_floored_not_minus_infinity():
    assert np.all(LogMel(P).frames(np.zeros(16000, np.float32)) == -100.0)


def test_params_round_trip_and_reject_unknown_fields():
    assert FeatureParams.from_dict(P.to_dict()) == P
    with pytest.raises(ValueError, match="unknown feature parameters"):
        FeatureParams.from_dict({**P.to_dict(), "n_mfcc": 13})
