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


def load(path, compile: bool = True):
    """A network saved by training, whatever its front end: the PCEN layer is registered before Keras reads it."""
    import keras

    from training import pcen  # noqa: F401  (registers the layer under its serialized name)

    return keras.saving.load_model(path, compile=compile)


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


DS_BLOCKS = "2x2,1x1,2x1,1x1,1x1"  # (time x mel) stride of each depthwise-separable block


def flat_layers(model):
    """The model's layers in order, those of nested models (a transferred body) in their place."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from flat_layers(layer)
        else:
            yield layer


def ds_cnn(input_shape: tuple[int, int], n_classes: int, norm_data: np.ndarray | None = None, width: int = 64,
           blocks: str = DS_BLOCKS, input_pool: tuple[int, int] | None = None, conv0_kernel: tuple[int, int] = (10, 4),
           streamable: bool = False, pool: str = "avg", frontend: str = "logmel"):
    """Depthwise-separable CNN (after "Hello Edge", Zhang et al. 2017), sized for about 12 M multiply-adds
    per window (width 96, default blocks) so that one core scores hundreds of live calls. No Resizing: it
    keeps the full time resolution. Its body ends in global average pooling, so the keyword may sit
    anywhere in the window.

    With the default blocks one output position hears 0.62 s, a whole keyword; "2x2,1x1,1x1,1x1" (v3,
    0.38 s) found 55.7 % of the test voices' keywords in running speech against 63.7 %, at the same
    cost per window (the extra time stride halves the positions of the last three blocks).

    `input_pool` averages the normalized log-mel over (time, mel) cells first, and one class gives a sigmoid
    output: together they make the cheap keyword-or-not gate of training/gate.py.

    `streamable` pads nothing in time ("valid"; the mel axis keeps "same"), so an output position depends
    only on the frames under it and not on where the window starts: training/streaming.py then computes
    each position once per call instead of once per window (give it `conv0_kernel` (8, 4): a receptive
    field that is a multiple of the time stride).

    `pool` is how the last feature map becomes one vector: "avg" averages every (time, mel) position
    (v5.1, v6); "max" averages over mel and keeps each channel's largest value over time, so a short
    keyword heard by a few of the 12 time positions is not diluted by the others (*vol* and *gaz*
    fill a third of the window or less). Measured in session 13, it found short words no more often
    and longer ones less often (training/README.md), so "avg" stays the recipe.

    `frontend` "pcen" puts per-channel energy normalization, trained with the network, between the log-mel
    input and the normalization (training/pcen.py); "logmel" (shipped) feeds the log-mel as it is."""
    import keras
    from keras import layers

    x = inp = keras.Input(shape=(*input_shape, 1), name="logmel")
    if frontend == "pcen":
        from training.pcen import PCEN

        front = PCEN(name="pcen")
        x = front(x)
        if norm_data is not None:
            norm_data = np.asarray(front(norm_data[..., None].astype(np.float32)))[..., 0]
    elif frontend != "logmel":
        raise ValueError(f"frontend must be 'logmel' or 'pcen', not {frontend!r}")
    norm = layers.Normalization(name="norm")
    if norm_data is not None:
        norm.adapt(norm_data[..., None].astype(np.float32))
    x = norm(x)
    if input_pool:
        x = layers.AveragePooling2D(input_pool, padding="same", name="input_pool")(x)
    x = _mel_pad(x, conv0_kernel[1], 2, streamable)
    x = layers.Conv2D(width, conv0_kernel, strides=2, padding="valid" if streamable else "same", use_bias=False,
                      name="conv0")(x)
    x = layers.BatchNormalization(name="bn0")(x)
    x = layers.ReLU(name="relu0")(x)
    strides = [tuple(int(v) for v in b.split("x")) for b in blocks.split(",")]
    for i, stride in enumerate(strides, start=1):
        # TensorFlow's depthwise convolution only strides equally in both axes: a time-only stride is
        # a stride-1 depthwise convolution followed by average pooling (still linear before the BN).
        equal = stride[0] == stride[1]
        x = _mel_pad(x, 3, stride[1] if equal else 1, streamable, name=f"dw{i}_melpad")
        x = layers.DepthwiseConv2D(3, strides=stride if equal else 1, padding="valid" if streamable else "same",
                                   use_bias=False, name=f"dw{i}")(x)
        if not equal:
            x = layers.AveragePooling2D(stride, padding="valid" if streamable else "same", name=f"dw{i}_pool")(x)
        x = layers.BatchNormalization(name=f"bn_dw{i}")(x)
        x = layers.ReLU(name=f"relu_dw{i}")(x)
        x = layers.Conv2D(width, 1, use_bias=False, name=f"pw{i}")(x)
        x = layers.BatchNormalization(name=f"bn_pw{i}")(x)
        x = layers.ReLU(name=f"relu_pw{i}")(x)
    if pool == "max":
        x = layers.AveragePooling2D((1, x.shape[2]), name="mel_pool")(x)
        x = layers.GlobalMaxPooling2D(name="pool")(x)
    elif pool == "avg":
        x = layers.GlobalAveragePooling2D(name="pool")(x)
    else:
        raise ValueError(f"pool must be 'avg' or 'max', not {pool!r}")
    x = layers.Dropout(0.3, name="drop")(x)
    out = layers.Dense(n_classes, activation="sigmoid" if n_classes == 1 else "softmax", name="head")(x)
    return keras.Model(inp, out, name="ds_cnn")


def _mel_pad(x, kernel: int, stride: int, streamable: bool, name: str = "conv0_melpad"):
    """What "same" padding adds on the mel axis only (TensorFlow puts the odd one after)."""
    if not streamable:
        return x
    from keras import layers

    n = x.shape[2]
    total = max((-(-n // stride) - 1) * stride + kernel - n, 0)
    return layers.ZeroPadding2D(((0, 0), (total // 2, total - total // 2)), name=name)(x)


def transfer_all(base, n_classes: int):
    """Transfer for the DS-CNN: the base's body (everything but its head) under a new head, all trainable
    (callers first train the head alone by freezing `body`)."""
    import keras
    from keras import layers

    body = keras.Model(base.input, base.layers[-2].output, name="body")
    inp = keras.Input(shape=base.input_shape[1:], name="logmel")
    out = layers.Dense(n_classes, activation="softmax", name="head")(body(inp))
    return keras.Model(inp, out, name="kws_transfer"), body
