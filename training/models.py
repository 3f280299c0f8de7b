"""Keras models: the seed 8-word CNN and its transfer to the 14 triage classes."""

from __future__ import annotations

import numpy as np


def seed_cnn(input_shape: tuple[int, int], n_classes: int, norm_data: np.ndarray | None = None):
    """The seed recipe: Resizing(32,32) → Normalization → Conv 32 → Conv 64 → MaxPool → Dropout →
    Flatten → Dense 128 → Dropout → Dense n (softmax)."""
    import keras
    from keras import layers

    norm = layers.Normalization(name="norm")
    if norm_data is not None:
        norm.adapt(norm_data[..., None].astype(np.float32))
    return keras.Sequential([
        keras.Input(shape=(*input_shape, 1), name="logmel"),
        layers.Resizing(32, 32, name="resize"),
        norm,
        layers.Conv2D(32, 3, activation="relu", name="conv1"),
        layers.Conv2D(64, 3, activation="relu", name="conv2"),
        layers.MaxPooling2D(name="pool"),
        layers.Dropout(0.25, name="drop1"),
        layers.Flatten(name="flatten"),
        layers.Dense(128, activation="relu", name="dense"),
        layers.Dropout(0.5, name="drop2"),
        layers.Dense(n_classes, activation="softmax", name="head"),
    ], name="seed_cnn")


def transfer(base, n_classes: int):
    """The base model's body with a new head; the body starts frozen (head-only training)."""
    import keras
    from keras import layers

    body = keras.Sequential(base.layers[:-1], name="body")
    body.trainable = False
    inp = keras.Input(shape=base.input_shape[1:], name="logmel")
    # training=False keeps frozen BatchNorm/Dropout semantics of the body as in the seed recipe.
    out = layers.Dense(n_classes, activation="softmax", name="head")(body(inp))
    return keras.Model(inp, out, name="kws_transfer"), body


def unfreeze_upper(body, names: tuple[str, ...] = ("conv2", "dense")) -> None:
    body.trainable = True
    for layer in body.layers:
        layer.trainable = layer.name in names
