"""Training windows fed to Keras a batch at a time, float32 only for the batch.

The windows are cached and held as float16. Handing Keras the whole set as float32 makes copies of it (the
cast, then TensorFlow's own tensors): on the 176 365 windows of session 27's runs (1.35 GB as float16), the fit
took the process from 2.67 to 9.69 GB. A `keras.utils.PyDataset` casts one batch at a time instead, and the fit
adds nothing measurable (2.67 GB after it).

But Keras hands a PyDataset to TensorFlow through `tf.data.Dataset.from_generator`, whose registry keeps the
dataset alive after the fit: each fit kept its windows for the life of the process (measured: four fits of
0.46 GB each left 1.9 GB held; a mining round's training set is about 1 GB, kept once per round). So `fit`
lets go of the windows itself when Keras is done with them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def shuffled(x: np.ndarray, y: np.ndarray, batch: int, seed: int, transform: Transform | None = None):
    """A keras.utils.PyDataset over (x, y): every window once per epoch, in an order drawn afresh each epoch,
    as float32 (batch, frames, mels, 1); `transform(windows, rng)` (float32 out) is applied to each batch.
    `release()` drops its hold on x and y."""
    import keras

    class Windows(keras.utils.PyDataset):
        def __init__(self, x: np.ndarray, y: np.ndarray):  # not from the closure, which release could not empty
            super().__init__(workers=1, use_multiprocessing=False)
            self.x, self.y = x, y
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(x))

        def __len__(self) -> int:
            return -(-len(self.x) // batch)

        def __getitem__(self, i: int):
            idx = np.sort(self.order[i * batch: (i + 1) * batch])  # sorted: reads in memory order
            xb = self.x[idx].astype(np.float32)
            return (transform(xb, self.rng) if transform else xb)[..., None], self.y[idx]

        def on_epoch_end(self) -> None:
            self.order = self.rng.permutation(len(self.x))

        def release(self) -> None:
            self.x, self.y, self.order = (np.empty((0, *a.shape[1:]), a.dtype) for a in (self.x, self.y, self.order))

    return Windows(x, y)


def fit(model, x: np.ndarray, y: np.ndarray, batch: int, seed: int, epochs: int,
        transform: Transform | None = None):
    """`model.fit` on `shuffled(x, y, …)`, holding x and y no longer than the fit; its History."""
    data = shuffled(x, y, batch, seed, transform)
    try:
        return model.fit(data, epochs=epochs, verbose=2)
    finally:
        data.release()
