"""Keras → ONNX parity on small models trained in seconds, and the manifest that makes them usable."""

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from training import export, models  # noqa: E402
from triage.features import FeatureParams  # noqa: E402
from triage.keywords import CLASSES  # noqa: E402
from triage.model import KeywordModel  # noqa: E402
from triage.spotter import KeywordSpotter  # noqa: E402

P = FeatureParams()


def _data(n, classes, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(-60, 15, (n, P.window_frames, P.n_mels)).astype(np.float32) + y[:, None, None] * 3
    return x, y


@pytest.mark.parametrize("arch", ["seed", "ds_cnn"])
def test_keras_and_onnx_agree_after_transfer(tmp_path, arch):
    import keras

    x8, y8 = _data(256, 8)
    build = models.seed_cnn if arch == "seed" else models.ds_cnn
    base = build((P.window_frames, P.n_mels), 8, norm_data=x8)
    base.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    base.fit(x8[..., None], y8, epochs=1, batch_size=64, verbose=0)
    kws, body = (models.transfer if arch == "seed" else models.transfer_all)(base, len(CLASSES))
    x, y = _data(256, len(CLASSES), seed=1)
    kws.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    kws.fit(x[..., None], y, epochs=1, batch_size=64, verbose=0)
    path = tmp_path / "kws.onnx"
    export.to_onnx(kws, P, path)
    assert export.keras_onnx_max_delta(kws, path, x[:64]) <= 1e-4

    export.write_manifest(path, name="t", classes=list(CLASSES), params=P, streaming=export.DEFAULT_STREAMING,
                          thresholds={"incendie": 0.7}, metrics={}, provenance={})
    manifest = json.loads(path.with_suffix(".json").read_text())
    assert manifest["classes"] == list(CLASSES) and manifest["features"]["n_mels"] == P.n_mels
    model = KeywordModel(path)
    assert model.thresholds["incendie"] == 0.7 and model.predict(x[:3]).shape == (3, len(CLASSES))
    assert KeywordSpotter(model).feed(np.zeros(32000, np.float32)) is not None
