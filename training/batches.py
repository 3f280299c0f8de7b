"""Training windows fed to Keras a batch at a time, float32 only for the batch.

The windows are cached and held as float16. Handing Keras the whole set as float32 makes copies of it (the
cast, then TensorFlow's own tensors): on the 176 365 windows of session 27's runs (1.35 GB as float16), the fit
took the process from 2.67 to 9.69 GB. A `keras.utils.PyDataset` casts one batch at a time instead, and the fit
adds nothing measurable (2.67 GB after it).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def shuffled(x: np.ndarray, y: np.ndarray, batch: int, seed: int,
             transform: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None):
    """A keras.utils.PyDataset over (x, y): every window once per epoch, in an order drawn afresh each epoch,
    as float32 (batch, frames, mels, 1); `transform(windows, rng)` (float32 out) is applied to each batch."""
    import keras

    class Windows(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False)
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(x))

        def __len__(self) -> int:
            return -(-len(x) // batch)

        def __getitem__(self, i: int):
            idx = np.sort(self.order[i * batch: (i + 1) * batch])  # sorted: reads in memory order
            xb = x[idx].astype(np.float32)
            return (transform(xb, self.rng) if transform else xb)[..., None], y[idx]

        def on_epoch_end(self) -> None:
            self.order = self.rng.permutation(len(x))

    return Windows()
