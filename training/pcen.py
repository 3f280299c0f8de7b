"""Per-channel energy normalization (PCEN) as the network's first layer, trained with it.

Wang et al. 2017 ("Trainable frontend for robust and far-field keyword spotting") replace the log of
the mel energies by an automatic gain control and a root: each band's energy E is divided by a smoothed
copy of itself M (the band's recent level), then compressed with a root instead of a log,

    PCEN = (E / (ε + M)^α + δ)^r − δ^r      (α, δ, r learned per band)

so a band's steady background divides out and the low-energy detail the log stretches (where noise
lives) is squashed. Session 19 found the unheard natural voices' keywords lost in noise, not on a clean
line (training/README.md); this layer is the front end the issue names for that.

It works inside the model, from the log-mel windows the manifest already describes: serving, the cached
training windows and the ensembles stay as they are. A window carries no state from the one before, so
the smoother starts from the window's own mean level and then follows the frames causally (a fixed
matrix product over time: one einsum in the graph).
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

DB_TO_LN = math.log(10.0) / 10.0  # power = exp(dB · ln 10 / 10)
EPS = 1e-10  # the log-mel floor (triage.features.AMIN): a band at the floor stays finite


def smoother(frames: int, s: float) -> np.ndarray:
    """(frames, frames) weights W with M = W @ E: M[t] = (1 − s) M[t − 1] + s E[t], and M[−1] the
    window's mean of E. Every row sums to 1, so a constant band is its own level."""
    t = np.arange(frames)
    lag = t[:, None] - t[None, :]
    w = np.where(lag >= 0, s * (1 - s) ** np.maximum(lag, 0), 0.0)
    w += ((1 - s) ** (t + 1))[:, None] / frames  # the start, spread over the window's mean
    return w.astype(np.float32)


@keras.saving.register_keras_serializable(package="triage")
class PCEN(keras.layers.Layer):
    """(batch, frames, mels, 1) log-mel dB → (batch, frames, mels, 1) PCEN, trainable per mel band."""

    def __init__(self, s: float = 0.04, alpha: float = 0.98, delta: float = 2.0, r: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.s, self.alpha0, self.delta0, self.r0 = s, alpha, delta, r

    def build(self, input_shape):
        frames, mels = input_shape[1], input_shape[2]
        self.w = self.add_weight(shape=(frames, frames), initializer=keras.initializers.Constant(
            smoother(frames, self.s)), trainable=False, name="smoother")
        # Logs of α, δ, r, so that each stays positive whatever the gradient does.
        for name, v in (("log_alpha", self.alpha0), ("log_delta", self.delta0), ("log_r", self.r0)):
            setattr(self, name, self.add_weight(shape=(mels,), initializer=keras.initializers.Constant(
                math.log(v)), name=name))

    def call(self, x):
        e = ops.exp(ops.minimum(x[..., 0], 80.0) * DB_TO_LN)  # (batch, frames, mels)
        m = ops.einsum("ts,bsm->btm", self.w, e)
        alpha = ops.minimum(ops.exp(self.log_alpha), 1.0)
        delta, r = ops.exp(self.log_delta), ops.exp(self.log_r)
        gained = e * ops.exp(-alpha * ops.log(EPS + m))
        return (ops.power(gained + delta, r) - ops.power(delta, r))[..., None]

    def get_config(self):
        return {**super().get_config(), "s": self.s, "alpha": self.alpha0, "delta": self.delta0, "r": self.r0}
