"""The public contract around the numerics: construction, dtypes, bad input, identity
initialisation, reduced-precision matmuls, the distrax adapter, and depth-independent programs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import jaxflow
from core_helpers import jacobian_log_det, make
from core_tolerances import assert_close


# ---------------------------------------------------------------- construction and spec

@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(dim=1, num_flows=2), ValueError, "dim must be >= 2, got 1"),
        (dict(dim=2.0, num_flows=2), TypeError, "dim must be an int"),
        (dict(dim=2, num_flows=0), ValueError, "num_flows must be >= 1, got 0"),
        (dict(dim=2, num_flows=2, hidden_dim=0), ValueError, "hidden_dim must be >= 1"),
        (dict(dim=2, num_flows=2, num_hidden=-1), ValueError, "num_hidden must be >= 0"),
        (dict(dim=2, num_flows=2, scale="softplus"), ValueError, "scale must be one of"),
        (dict(dim=2, num_flows=2, scale="tanh", clamp=0.0), ValueError, "clamp must be a positive number"),
        (dict(dim=2, num_flows=2, scan_unroll=0), ValueError, "scan_unroll must be >= 1"),
    ],
)
def test_bad_specs_are_rejected_at_construction(kwargs, error, message):
    with pytest.raises(error, match=message):
        jaxflow.RealNVP(**kwargs)


def test_spec_is_hashable_and_a_static_jit_argument():
    a = jaxflow.RealNVP(dim=3, num_flows=2, hidden_dim=8)
    assert a == jaxflow.RealNVP(dim=3, num_flows=2, hidden_dim=8) and hash(a) == hash(jaxflow.RealNVP(dim=3, num_flows=2, hidden_dim=8))
    assert (a.split_dim, a.condition_dim) == (1, 2)
    unrolled = jaxflow.RealNVP(dim=3, num_flows=2, hidden_dim=8, scan_unroll=True)
    assert unrolled.scan_unroll == 2 and unrolled != a  # True == 1 in Python: must not alias
    flow, params, x = make(3, 2, jnp.float64, hidden_dim=8)
    assert jax.jit(jaxflow.log_prob, static_argnames="flow")(flow=flow, params=params, x=x).shape == (7,)


def test_parameter_layout_is_documented_shape_for_shape():
    flow = jaxflow.RealNVP(dim=5, num_flows=8, hidden_dim=64, num_hidden=2)
    shapes = jax.tree.map(jnp.shape, jaxflow.init(flow, jax.random.key(0)))
    assert shapes == {"conditioner": {
        "input": {"kernel": (8, 3, 64), "bias": (8, 64)},
        "hidden_0": {"kernel": (8, 64, 64), "bias": (8, 64)},
        "hidden_1": {"kernel": (8, 64, 64), "bias": (8, 64)},
        "dims": {"kernel": (8, 64, 4), "bias": (8, 4)},
    }}


def test_init_matches_torch_linear_default_distribution():
    """Every kernel and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)): Kolmogorov-Smirnov per leaf."""
    flow = jaxflow.RealNVP(dim=16, num_flows=4, hidden_dim=256, num_hidden=1)
    params = jaxflow.init(flow, jax.random.key(0), dtype=jnp.float64)["conditioner"]
    for name, fan_in in [("input", 8), ("hidden_0", 256), ("dims", 256)]:
        for leaf in params[name].values():
            unit = np.asarray(leaf).ravel() * np.sqrt(fan_in)
            assert scipy.stats.kstest(unit, scipy.stats.uniform(-1, 2).cdf).pvalue > 1e-3, name
            assert np.max(np.abs(unit)) <= 1
    layers = params["input"]["kernel"]
    assert not bool(jnp.allclose(layers[0], layers[1])), "layers must be initialised independently"


# ---------------------------------------------------------------- dtypes

def _run_without_x64(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_float32_by_default_and_float64_needs_x64():
    out = _run_without_x64("""
        import jax, jax.numpy as jnp, jaxflow
        flow = jaxflow.RealNVP(dim=3, num_flows=2, hidden_dim=8)
        params = jaxflow.init(flow, jax.random.key(0))
        x = jnp.ones((4, 3))
        print(jax.tree.leaves(params)[0].dtype, jaxflow.log_prob(flow, params, x).dtype,
              jaxflow.sample(flow, params, jax.random.key(1), 2).dtype)
        try:
            jaxflow.init(flow, jax.random.key(0), dtype=jnp.float64)
        except ValueError as err:
            print(err)
    """)
    first, second = out.splitlines()
    assert first == "float32 float32 float32"
    assert second == 'init: dtype float64 needs jax.config.update("jax_enable_x64", True) first'


def test_jaxflow_works_without_torch():
    out = _run_without_x64("""
        import sys
        sys.modules["torch"] = None  # any import of torch now raises ImportError
        import jax, jaxflow
        flow = jaxflow.RealNVP(dim=2, num_flows=2, hidden_dim=8)
        params = jaxflow.init(flow, jax.random.key(0))
        print(jaxflow.log_prob(flow, params, jaxflow.sample(flow, params, jax.random.key(1), 3)).shape)
    """)
    assert out == "(3,)"


def test_float64_end_to_end():
    flow, params, x = make(3, 2, jnp.float64)
    z, ld = jaxflow.f(flow, params, x)
    assert z.dtype == ld.dtype == jnp.float64
    assert jaxflow.log_prob(flow, params, x).dtype == jnp.float64
    grads = jax.grad(lambda p: jaxflow.log_prob(flow, p, x).sum())(params)
    assert {leaf.dtype for leaf in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float64)}


def test_integer_and_other_float_data_take_the_parameters_dtype():
    flow, params, _ = make(3, 2, jnp.float32)
    ints = np.arange(12).reshape(4, 3)
    lp = jaxflow.log_prob(flow, params, ints)
    assert lp.dtype == jnp.float32
    assert_close(lp, jaxflow.log_prob(flow, params, ints.astype(np.float32)), "same_math")
    assert jaxflow.log_prob(flow, params, ints.astype(np.float64)).dtype == jnp.float32
    assert jaxflow.log_prob(flow, params, [[0, 1, 2]]).shape == (1,)


# ---------------------------------------------------------------- bad input

def test_wrong_trailing_dimension_names_both_shapes():
    flow, params, _ = make(3, 2, jnp.float64)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\) for RealNVP\(dim=3.*got shape \(5, 4\)"):
        jaxflow.log_prob(flow, params, jnp.ones((5, 4)))
    with pytest.raises(ValueError, match=r"z must have shape \(\.\.\., 3\).*got shape \(\)"):
        jaxflow.g(flow, params, 1.0)


def test_params_from_another_spec_are_rejected():
    flow, params, x = make(3, 2, jnp.float64)
    deeper = jaxflow.RealNVP(dim=3, num_flows=4, hidden_dim=16)
    with pytest.raises(ValueError, match=r"params\['conditioner'\]\['dims'\]\['bias'\] has shape \(2, 2\), expected \(4, 2\)"):
        jaxflow.f(deeper, params, x)
    shallower = jaxflow.RealNVP(dim=3, num_flows=2, hidden_dim=16, num_hidden=1)
    with pytest.raises(ValueError, match=r"unexpected \[\"\['conditioner'\]\['hidden_1'\]"):
        jaxflow.log_prob(shallower, params, x)
    with pytest.raises(TypeError, match="expected a jaxflow flow spec"):
        jaxflow.log_prob(params, flow, x)


def test_mixed_or_integer_parameter_dtypes_are_rejected():
    flow, params, x = make(3, 2, jnp.float64)
    mixed = jax.tree.map(lambda a: a, params)
    mixed["conditioner"]["dims"]["bias"] = mixed["conditioner"]["dims"]["bias"].astype(jnp.float32)
    with pytest.raises(TypeError, match=r"params must all share one real floating dtype, got \['float32', 'float64'\]"):
        jaxflow.log_prob(flow, mixed, x)


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (np.ones((2, 3), np.complex64), TypeError, "x must be real, got complex dtype complex64"),
        (np.array([["a", "b", "c"]]), TypeError, "x must be a numeric array, got dtype <U1"),
        ([[1, 2], [3]], TypeError, "x must be a numeric array, got list"),
        (object(), TypeError, "x must be a numeric array, got dtype object"),
    ],
)
def test_non_numeric_and_complex_data_are_rejected(bad, error, message):
    flow, params, _ = make(3, 2, jnp.float64)
    with pytest.raises(error, match=message):
        jaxflow.log_prob(flow, params, bad)


def test_latent_must_be_a_distrax_distribution_of_the_right_event_shape():
    flow, params, x = make(3, 2, jnp.float64)
    with pytest.raises(ValueError, match=r"latent must have event shape \(3,\), got \(2,\)"):
        jaxflow.log_prob(flow, params, x, latent=jaxflow.standard_normal(2, jnp.float64))
    with pytest.raises(TypeError, match="latent must be a distrax.Distribution, got str"):
        jaxflow.sample(flow, params, jax.random.key(0), 3, latent="normal")


def test_a_nan_row_does_not_touch_the_other_rows():
    flow, params, x = make(5, 3, jnp.float64)
    poisoned = x.at[2, 1].set(jnp.nan)
    clean = jaxflow.log_prob(flow, params, x)
    dirty = jaxflow.log_prob(flow, params, poisoned)
    assert bool(jnp.isnan(dirty[2]))
    rest = np.r_[0:2, 3:7]
    np.testing.assert_array_equal(np.asarray(dirty[rest]), np.asarray(clean[rest]))
    grads = jax.grad(lambda v: jaxflow.log_prob(flow, params, v).sum())(poisoned)
    assert bool(jnp.all(jnp.isfinite(grads[rest])))


# ---------------------------------------------------------------- options

@pytest.mark.parametrize("scale", ["exp", "tanh"])
@pytest.mark.parametrize("dim,num_flows", [(5, 3), (4, 2), (4, 3)])
def test_identity_init_is_the_identity_up_to_the_swap_of_halves(dim, num_flows, scale):
    """t = s = 0: each layer only moves the conditioning half to the front, z = roll(x, -d)."""
    flow, params, x = make(dim, num_flows, jnp.float64, scale=scale, identity_init=True)
    z, ld = jaxflow.f(flow, params, x)
    shift = flow.split_dim * num_flows
    np.testing.assert_array_equal(np.asarray(z), np.roll(np.asarray(x), -shift, axis=-1))
    np.testing.assert_array_equal(np.asarray(ld), np.zeros(7))
    np.testing.assert_array_equal(np.asarray(jaxflow.g(flow, params, z)), np.asarray(x))
    assert_close(jaxflow.log_prob(flow, params, x), jaxflow.standard_normal(dim, jnp.float64).log_prob(x), "same_math")


def test_identity_init_with_glow_sigmoid_scales_by_sigmoid_two():
    """Glow's scale sigmoid(s + 2) is < 1 everywhere: at s = 0 each layer scales x2 by sigmoid(2)."""
    flow, params, x = make(4, 1, jnp.float64, scale="sigmoid", identity_init=True)
    z, ld = jaxflow.f(flow, params, x)
    sigmoid_two = 1 / (1 + np.exp(-2.0))
    assert_close(z, jnp.concatenate([x[:, 2:], x[:, :2] * sigmoid_two], -1), "same_math")
    assert_close(ld, jnp.full(7, 2 * np.log(sigmoid_two)), "same_math")


def test_tanh_clamp_bounds_each_layer_log_det():
    flow, params, _ = make(4, 1, jnp.float64, scale="tanh", clamp=0.5)
    big = jax.tree.map(lambda a: 100.0 * a, params)  # conditioner outputs far beyond the clamp
    x = jax.random.normal(jax.random.key(0), (64, 4), jnp.float64)
    ld = jaxflow.log_det(flow, big, x)
    assert float(jnp.max(jnp.abs(ld))) <= 2 * 0.5 and float(jnp.max(jnp.abs(ld))) > 0.5
    assert bool(jnp.all(jnp.isfinite(jaxflow.g(flow, big, jaxflow.f(flow, big, x)[0]))))


def test_bfloat16_matmuls_keep_float32_outputs_and_stay_close():
    flow, params, x = make(8, 3, jnp.float32)
    low = jaxflow.RealNVP(**{**flow.__dict__, "compute_dtype": "bfloat16"})
    z, ld = jaxflow.f(low, params, x)
    assert z.dtype == ld.dtype == jnp.float32
    assert_close(jaxflow.log_prob(low, params, x), jaxflow.log_prob(flow, params, x), "bfloat16_vs_float32")
    assert_close(ld, jacobian_log_det(lambda v: jaxflow.f(low, params, v)[0], x), "bfloat16_vs_float32")


def test_program_size_does_not_grow_with_depth():
    """Layers are one scan: the traced program of f is the same size for 2 and 64 layers."""
    def size(num_flows, unroll):
        flow = jaxflow.RealNVP(dim=4, num_flows=num_flows, hidden_dim=8, scan_unroll=unroll)
        params = jax.eval_shape(lambda: jaxflow.init(flow, jax.random.key(0)))
        x = jax.ShapeDtypeStruct((3, 4), jnp.float32)
        return len(jax.jit(jaxflow.log_prob, static_argnums=0).lower(flow, params, x).as_text().splitlines())

    assert size(2, 1) == size(64, 1)
    assert size(64, True) > size(16, True) > size(2, True)  # the measure does see unrolled growth


def test_repeated_eager_calls_compile_once():
    """The default latent is built inside the trace: a distrax object passed to jit carries bound
    methods in its pytree metadata, so a fresh one per call recompiled every call (0.2 s each)."""
    from jaxflow.core import flow as flow_module

    flow, params, x = make(3, 2, jnp.float64)
    jaxflow.log_prob(flow, params, x)
    jaxflow.sample_and_log_prob(flow, params, jax.random.key(0), 5)
    compiled = (flow_module._log_prob._cache_size(), flow_module._sample_and_log_prob._cache_size())
    for seed in range(3):
        jaxflow.log_prob(flow, params, x + seed)
        jaxflow.sample(flow, params, jax.random.key(seed), 5)
        jaxflow.sample_and_log_prob(flow, params, jax.random.key(seed), 5)
    assert (flow_module._log_prob._cache_size(), flow_module._sample_and_log_prob._cache_size()) == compiled


# ---------------------------------------------------------------- distrax

def test_distrax_bijector_and_distribution_agree_with_jaxflow():
    flow, params, x = make(5, 3, jnp.float64)
    dist = jaxflow.as_distribution(flow, params)
    assert isinstance(dist, distrax.Transformed)
    assert_close(dist.log_prob(x), jaxflow.log_prob(flow, params, x), "same_math")
    key = jax.random.key(4)
    assert_close(dist.sample(seed=key, sample_shape=6), jaxflow.sample(flow, params, key, 6), "same_math")
    samples, lp = dist.sample_and_log_prob(seed=key, sample_shape=6)
    assert_close(lp, jaxflow.log_prob(flow, params, samples), "round_trip")

    bijector = jaxflow.as_bijector(flow, params)
    z = jax.random.normal(key, (7, 5), jnp.float64)
    y, ld = bijector.forward_and_log_det(z)
    assert_close(ld, jacobian_log_det(bijector.forward, z), "log_det_vs_jacobian")
    assert_close(bijector.inverse(y), z, "round_trip")
    assert_close(bijector.inverse_log_det_jacobian(y), -ld, "log_det_cancel")


def test_custom_latent_flows_through_log_prob_and_sample():
    flow, params, x = make(3, 2, jnp.float64)
    latent = distrax.MultivariateNormalDiag(jnp.ones(3, jnp.float64), 2 * jnp.ones(3, jnp.float64))
    z, ld = jaxflow.f(flow, params, x)
    assert_close(jaxflow.log_prob(flow, params, x, latent=latent), latent.log_prob(z) + ld, "same_math")
    key = jax.random.key(1)
    draws = latent.sample(seed=key, sample_shape=(4,))
    assert_close(jaxflow.sample(flow, params, key, 4, latent=latent), jaxflow.g(flow, params, draws), "same_math")
