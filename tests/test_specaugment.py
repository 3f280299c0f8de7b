"""Log-mel augmentation of training batches: the warp moves formants, masks stay within bounds."""

import numpy as np
import pytest

from training.batches import shuffled
from training.specaugment import SpecAugment
from triage.features import FeatureParams, mel_edges

P = FeatureParams()
NO_MASKS = dict(time_masks=0, freq_masks=0)


def test_no_warp_and_no_masks_is_the_identity():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 96, 40)).astype(np.float16)
    assert np.array_equal(SpecAugment(warp=0.0, **NO_MASKS)(x, rng, P), x.astype(np.float32))


@pytest.mark.parametrize("alpha", [0.9, 1.1])
def test_warp_moves_a_formant_by_its_factor(alpha):
    centres = mel_edges(P)[1:-1]
    band = 25
    x = np.zeros((1, 96, 40), np.float32)
    x[:, :, band] = 1.0
    out = SpecAugment.warped(x, np.array([alpha]), P)[0, 0]
    # The peak's centre of mass, in Hz, lands where the band's centre frequency times α lies.
    moved = np.interp(np.sum(out * np.arange(40)) / out.sum(), np.arange(40), centres)
    assert moved == pytest.approx(centres[band] * alpha, rel=0.02)
    assert out.sum() == pytest.approx(1.0, rel=0.05)


def test_masks_replace_at_most_their_spans_with_the_window_mean():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 96, 40)).astype(np.float32) + 5
    aug = SpecAugment(warp=0.0, time_masks=1, max_time=10, freq_masks=1, max_freq=5)
    out = aug(x, rng, P)
    changed = out != x
    for w in range(len(x)):
        rows = np.nonzero(changed[w].all(axis=1))[0]  # frames masked across every band
        cols = np.nonzero(changed[w].all(axis=0))[0]  # bands masked across every frame
        assert len(rows) <= 10 and len(cols) <= 5
        if len(rows):
            assert np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows)))  # one contiguous span
        assert np.allclose(out[w][changed[w]], x[w].mean(), atol=1e-4)
    assert changed.any()


def test_augmented_batches_cover_every_window_once_per_epoch_with_its_label():
    x = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((10, 96, 40), np.float32)
    y = np.arange(10)
    augment = SpecAugment(warp=0.0, **NO_MASKS)
    data = shuffled(x, y, 4, seed=0, transform=lambda xb, rng: augment(xb, rng, P))
    for _ in range(2):
        seen = []
        for i in range(len(data)):
            xb, yb = data[i]
            assert xb.shape[1:] == (96, 40, 1) and np.array_equal(xb[:, 0, 0, 0], yb)
            seen += list(yb)
        assert sorted(seen) == list(range(10))
        data.on_epoch_end()
