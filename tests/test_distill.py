"""The distillation targets and loss (training/distill.py), on plain arrays."""

import numpy as np
import pytest

from training import distill
from training.windows import MASKED
from triage.keywords import CLASSES, KEYWORDS, UNKNOWN

N = len(CLASSES)


def _posteriors(rng, n):
    return rng.dirichlet(np.full(N, 0.3), size=n).astype(np.float32)


def test_softened_teacher_is_the_teacher_at_temperature_one_and_flatter_above():
    p = _posteriors(np.random.default_rng(0), 8)
    np.testing.assert_allclose(distill.soften(p, 1.0), p, atol=1e-6)
    warm = distill.soften(p, 3.0)
    np.testing.assert_allclose(warm.sum(axis=1), 1.0, atol=1e-6)
    assert (warm.max(axis=1) < p.max(axis=1)).all()
    assert (warm.argmax(axis=1) == p.argmax(axis=1)).all()


def test_targets_carry_a_label_only_where_the_window_has_one():
    p = _posteriors(np.random.default_rng(1), 3)
    labels = np.array([CLASSES.index("gaz"), MASKED, CLASSES.index(UNKNOWN)])
    t = distill.targets(p, labels, 2.0)
    assert t.shape == (3, 2 * N)
    assert t[:, N:].sum(axis=1).tolist() == [1.0, 0.0, 1.0]
    assert t[0, N + CLASSES.index("gaz")] == 1.0 and t[2, N + CLASSES.index(UNKNOWN)] == 1.0


@pytest.mark.parametrize("hard_weight", [0.0, 0.3])
def test_loss_is_lowest_where_the_student_says_what_the_teacher_says(hard_weight):
    import keras

    rng = np.random.default_rng(2)
    teacher = _posteriors(rng, 16)
    labels = np.where(rng.random(16) < 0.5, MASKED, teacher.argmax(axis=1))
    y = keras.ops.convert_to_tensor(distill.targets(teacher, labels, 2.0))
    loss = distill.distillation_loss(N, 2.0, hard_weight)

    def mean_loss(pred):
        return float(keras.ops.mean(loss(y, keras.ops.convert_to_tensor(pred))))

    at_teacher = mean_loss(teacher)
    for _ in range(5):
        other = (0.7 * teacher + 0.3 * _posteriors(rng, 16)).astype(np.float32)
        assert mean_loss(other) > at_teacher
    if hard_weight == 0:  # the teacher alone: any label is ignored
        y0 = keras.ops.convert_to_tensor(distill.targets(teacher, np.full(16, MASKED), 2.0))
        assert float(keras.ops.mean(loss(y0, keras.ops.convert_to_tensor(teacher)))) == pytest.approx(at_teacher)


def test_an_epoch_keeps_every_keyword_part_and_hard_window_and_a_sample_of_the_easy_ones():
    unknown, gaz = CLASSES.index(UNKNOWN), CLASSES.index("gaz")
    y = np.array([gaz, MASKED, unknown, unknown, unknown, unknown, unknown])
    p = np.zeros((7, N), np.float32)
    p[:, unknown] = 1.0
    p[3, KEYWORDS.index("vol")], p[3, unknown] = 0.3, 0.7  # the teacher hesitates: kept
    keep = distill.epoch_windows(y, p, keyword_free=2, rng=np.random.default_rng(0))
    assert {0, 1, 3} <= set(keep.tolist()) and len(keep) == 5 and (np.diff(keep) > 0).all()
    assert len(distill.epoch_windows(y, p, keyword_free=100,
                                     rng=np.random.default_rng(0))) == 7
