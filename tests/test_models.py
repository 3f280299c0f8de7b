"""The DS-CNN's last pooling (training/models.py): what the max-over-time variant computes, and that it
exports to ONNX as it runs in Keras; the PCEN front end (training/pcen.py)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras")

from training import models  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded_weights():
    """Keras draws initial weights from its own generator: the same networks on every run."""
    import keras

    keras.utils.set_random_seed(0)


def _maps_and_embedding(model, x):
    import keras

    before = keras.Model(model.input, model.get_layer("relu_pw5").output)
    embedding = keras.Model(model.input, model.get_layer("pool").output)
    return before.predict(x, verbose=0), embedding.predict(x, verbose=0)


def test_max_pool_keeps_each_channels_largest_mel_average_over_time():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (6, 96, 40)).astype(np.float32)
    m = models.ds_cnn((96, 40), 14, norm_data=x, width=8, pool="max")
    maps, emb = _maps_and_embedding(m, x[..., None])
    assert maps.shape[1:3] == (12, 10)
    np.testing.assert_allclose(emb, maps.mean(axis=2).max(axis=1), rtol=1e-5, atol=1e-6)
    # the average pooling it replaces is a different vector on the same maps
    assert not np.allclose(emb, maps.mean(axis=(1, 2)), rtol=0.05, atol=0)


def test_max_pool_model_exports_to_onnx_as_it_runs_in_keras(tmp_path):
    pytest.importorskip("tf2onnx")
    from training import export
    from triage.features import FeatureParams

    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (8, 96, 40)).astype(np.float32)
    m = models.ds_cnn((96, 40), 14, norm_data=x, width=8, pool="max")
    path = tmp_path / "m.onnx"
    export.to_onnx(m, FeatureParams(), path)
    assert export.keras_onnx_max_delta(m, path, x) < 1e-5


def test_pool_is_checked():
    with pytest.raises(ValueError, match="'avg' or 'max'"):
        models.ds_cnn((96, 40), 14, width=8, pool="attention")


def test_pcen_smoother_is_the_recursion_started_from_the_window_mean():
    from training.pcen import smoother

    rng = np.random.default_rng(3)
    e = rng.uniform(0, 5, 96)
    m, expected = e.mean(), []
    for v in e:
        m = 0.96 * m + 0.04 * v
        expected.append(m)
    w = smoother(96, 0.04)
    np.testing.assert_allclose(w @ e, expected, rtol=1e-5)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-5)


def test_pcen_divides_out_a_level_change_and_keeps_a_steady_band_flat():
    from training.pcen import PCEN

    rng = np.random.default_rng(4)
    x = rng.normal(-40, 12, (3, 96, 40, 1)).astype(np.float32)
    gainless = PCEN(alpha=1.0)
    np.testing.assert_allclose(np.asarray(gainless(x + 20.0)), np.asarray(gainless(x)), rtol=1e-3, atol=1e-4)
    steady = np.asarray(PCEN()(np.full((1, 96, 40, 1), -30.0, np.float32)))
    assert np.ptp(steady) < 1e-4


def test_pcen_model_exports_to_onnx_and_reloads_as_it_runs_in_keras(tmp_path):
    pytest.importorskip("tf2onnx")

    from training import export
    from triage.features import FeatureParams

    rng = np.random.default_rng(5)
    x = rng.normal(-40, 15, (8, 96, 40)).astype(np.float32)
    m = models.ds_cnn((96, 40), 14, norm_data=x, width=8, pool="max", frontend="pcen")
    path = tmp_path / "m.onnx"
    export.to_onnx(m, FeatureParams(), path)
    assert export.keras_onnx_max_delta(m, path, x) < 1e-5
    m.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", x[..., None])
    # A fresh process that never imported training.pcen, as `training.distill` loads a student.
    subprocess.run([sys.executable, "-c", "import sys, numpy as np; from training import models; "
                    "d = sys.argv[1]; np.save(d + '/y.npy', models.load(d + '/m.keras').predict(np.load(d + '/x.npy'), "
                    "verbose=0))", str(tmp_path)], check=True, cwd=Path(__file__).resolve().parents[1])
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), m.predict(x[..., None], verbose=0), atol=1e-6)


def test_frontend_is_checked():
    with pytest.raises(ValueError, match="'logmel' or 'pcen'"):
        models.ds_cnn((96, 40), 14, width=8, frontend="mfcc")


def test_a_distilled_students_card_names_its_start_size_and_front_end(tmp_path):
    from training.distill import described

    x = np.random.default_rng(6).normal(-40, 15, (4, 96, 40)).astype(np.float32)
    for frontend in ("logmel", "pcen"):
        # transferred, as every student is: the front end sits inside the nested body
        m, _ = models.transfer_all(models.ds_cnn((96, 40), 8, norm_data=x, width=8, frontend=frontend), 14)
        said = described(m, tmp_path / "student.keras")
        assert said == (f"the network of student.keras ({m.count_params():,} parameters, "
                        f"{'PCEN' if frontend == 'pcen' else 'log-mel'} front end)")
