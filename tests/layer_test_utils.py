"""Shared layer-test helper (keras-hub style): build, eager and graph call, dtype, config and
.keras save/load round trips, each checked numerically against the eager output."""

from __future__ import annotations

import os
import tempfile

import keras
import numpy as np
import tensorflow as tf


def run_layer_test(layer_cls, init_kwargs, inputs, expected_output_shape, expected_dtype=None, atol=1e-6):
    """Check a layer end to end and return the built layer and its eager output (NumPy).

    Args:
      layer_cls: the layer class.
      init_kwargs: constructor keyword arguments.
      inputs: a tensor (single input).
      expected_output_shape: tuple the output shape must equal.
      expected_dtype: expected output dtype (defaults to the input dtype).
      atol: tolerance of the round-trip comparisons.
    """
    layer = layer_cls(**init_kwargs)
    out = layer(inputs)
    assert tuple(out.shape) == tuple(expected_output_shape), (out.shape, expected_output_shape)
    assert out.dtype == (expected_dtype or inputs.dtype), (out.dtype, expected_dtype)
    out_np = out.numpy()
    assert np.all(np.isfinite(out_np))

    graph_out = tf.function(lambda t: layer(t))(inputs)
    np.testing.assert_allclose(graph_out.numpy(), out_np, atol=atol, rtol=0)

    config = layer.get_config()
    for key, value in init_kwargs.items():
        if key in config and not isinstance(value, (dict, keras.initializers.Initializer)):
            assert config[key] == value, (key, config[key], value)
    clone = layer_cls.from_config(config)
    clone(inputs)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(inputs).numpy(), out_np, atol=atol, rtol=0)

    x_in = keras.Input(shape=tuple(inputs.shape[1:]), dtype=inputs.dtype.name, batch_size=None)
    model = keras.Model(x_in, layer(x_in))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "layer.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(inputs).numpy(), out_np, atol=atol, rtol=0)
    return layer, out_np
