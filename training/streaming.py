"""A streamable DS-CNN turned into a one-hop step: each output position computed once per call.

The windowed model recomputes a whole 0.96 s window every hop although only the newest frames are
new. `models.ds_cnn(streamable=True)` pads nothing in time, so an output position depends only on the
frames under it; its window posterior is the head applied to the mean (or maximum) of its positions. The step
model here takes one hop of new log-mel frames and, for every layer that looks back in time, the
frames of its input it still needs (its state); it returns the window's posteriors and the new
states. Fed a call hop by hop it gives exactly what the windowed model gives on the latest window
(tests/test_streaming.py), for about a twelfth of the multiply-adds.
"""

from __future__ import annotations

from dataclasses import dataclass

from training.models import flat_layers


@dataclass(frozen=True)
class State:
    name: str
    shape: tuple[int, ...]  # without the batch axis


def step_model(model, hop: int):
    """(keras step model, its states in input order) for a trained streamable ds_cnn.

    The step's inputs are `frames` (batch, hop, mels, 1) and then one input per state; its outputs
    are the posteriors and then the new states, in the same order."""
    import keras
    from keras import layers

    frames = keras.Input(shape=(hop, *model.input_shape[2:]), name="frames")
    inputs, outputs, states = [frames], [], []
    x = frames
    pending_pad = None
    for layer in flat_layers(model):
        if isinstance(layer, layers.InputLayer):
            continue
        if isinstance(layer, layers.ZeroPadding2D):
            pending_pad = layer  # applied after the state is joined on the time axis
            continue
        if isinstance(layer, layers.Dropout):
            continue
        if isinstance(layer, (layers.GlobalAveragePooling2D, layers.GlobalMaxPooling2D)):
            x = layers.Lambda(lambda t: keras.ops.mean(t, axis=2), name="mel_mean")(x)  # (batch, new, C)
            positions = layer.input.shape[1]
            x = _joined(x, State("positions", (positions - 1, x.shape[2])), inputs, outputs, states)
            over = keras.ops.mean if isinstance(layer, layers.GlobalAveragePooling2D) else keras.ops.max
            x = layers.Lambda(lambda t, n=positions, f=over: f(t[:, -n:], axis=1), name="window_pool")(x)
            continue
        kernel, stride = _time_kernel(layer)
        if kernel > 1 or stride > 1:
            if (x.shape[1] % stride) or kernel < stride:
                raise ValueError(f"{layer.name}: a hop of {hop} frames does not fit its time stride {stride}")
            if kernel > stride:
                x = _joined(x, State(f"{layer.name}_state", (kernel - stride, *x.shape[2:])), inputs, outputs,
                            states)
        if pending_pad is not None:
            x, pending_pad = pending_pad(x), None
        x = layer(x)
    return keras.Model(inputs, [x, *outputs], name="ds_cnn_step"), states


def time_stride(model) -> int:
    """Frames between two output positions of the model: the product of its layers' time strides."""
    stride = 1
    for layer in flat_layers(model):
        stride *= _time_kernel(layer)[1]
    return stride


def _time_kernel(layer) -> tuple[int, int]:
    from keras import layers

    if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D)):
        return layer.kernel_size[0], layer.strides[0]
    if isinstance(layer, layers.AveragePooling2D):
        return layer.pool_size[0], layer.strides[0]
    return 1, 1


def _joined(x, state: State, inputs: list, outputs: list, states: list):
    """x after `state` on the time axis; the last frames of the result become the new state."""
    import keras
    from keras import layers

    held = keras.Input(shape=state.shape, name=state.name)
    joined = layers.Concatenate(axis=1, name=f"{state.name}_join")([held, x])
    keep = state.shape[0]
    outputs.append(layers.Lambda(lambda t, n=keep: t[:, -n:], name=f"{state.name}_next")(joined))
    inputs.append(held)
    states.append(state)
    return joined
