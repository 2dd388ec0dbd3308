"""Every layer kind, alone and composed, against independent truths."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import jaxflow
from jaxflow import Affine, Chain, Permute


def test_a_flow_without_parameters_computes_in_the_data_dtype():
    """Regression: with no parameter to take the dtype from, float64 events were cast to float32
    (params_dtype's default), losing half the digits of a Chain(Affine, Permute)."""
    flow = jaxflow.Flow(event_shape=(3,), layers=Chain(Affine(0.5, 3.0), Permute("reverse")))
    params = jaxflow.init(flow, jax.random.key(0), jnp.float64)
    x = jnp.array([[1.0, 2.0, 1.0 + 1e-12]], jnp.float64)
    z, ld = jaxflow.f(flow, params, x)
    assert z.dtype == ld.dtype == jnp.float64
    np.testing.assert_array_equal(np.asarray(z), (np.asarray(x)[:, ::-1] - 0.5) / 3.0)
    assert jaxflow.log_prob(flow, params, x).dtype == jnp.float64
    assert jaxflow.g(flow, params, x.astype(jnp.float32)).dtype == jnp.float32
