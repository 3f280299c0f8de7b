"""Training windows fed a batch at a time: float16 held, float32 handed to Keras, every window once an epoch."""

import numpy as np

from training.batches import shuffled


def test_every_window_once_per_epoch_as_float32_with_its_label_in_a_new_order():
    x = (np.arange(10)[:, None, None] * np.ones((10, 96, 40))).astype(np.float16)
    y = np.arange(10) * 3
    data = shuffled(x, y, 4, seed=0)
    assert len(data) == 3
    orders = []
    for _ in range(3):
        seen = []
        for i in range(len(data)):
            xb, yb = data[i]
            assert xb.dtype == np.float32 and xb.shape[1:] == (96, 40, 1)
            assert np.array_equal(xb[:, 0, 0, 0] * 3, yb)
            seen += list(yb)
        assert sorted(seen) == list(y)
        orders.append(data.order.copy())
        data.on_epoch_end()
    assert not np.array_equal(orders[0], orders[1])  # reshuffled


def test_a_fit_holds_its_windows_no_longer_than_the_fit():
    # Keras passes a PyDataset to tf.data.Dataset.from_generator, whose registry outlives the fit: without the
    # release, every mining round's training set stayed in memory to the end of the run.
    import gc
    import weakref

    import keras

    from training.batches import fit

    model = keras.Sequential([keras.Input((96, 40, 1)), keras.layers.AveragePooling2D((8, 8)),
                              keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.zeros((40, 96, 40), np.float16)
    y = np.arange(40) % 3
    held = weakref.ref(x)
    fit(model, x, y, batch=16, seed=0, epochs=2, transform=lambda xb, rng: xb + rng.normal(size=xb.shape))
    del x
    gc.collect()
    assert held() is None
