"""Regression tests of the library-hardening issue: KL divergence through the distrax adapter,
``jax.shard_map``, the import cost of ``import jaxflow`` (no distrax/TFP), and argument checks of
``sample``'s counts and of ``compute_dtype``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxflow
from jaxflow.core.latent import StandardNormal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code: str, timeout: float = 600, **env) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter (own jax configuration and devices) from the repository root."""
    environ = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **env}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True,
                          timeout=timeout)


def setup(seed: int, dtype=jnp.float64, dim: int = 2):
    """A RealNVP and non-identity parameters (the init perturbed per leaf, so couplings act)."""
    flow = jaxflow.RealNVP(dim=dim, num_flows=4, hidden_dim=16)
    params = jaxflow.init(flow, jax.random.key(seed), dtype=dtype)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(100 + seed), len(leaves))
    return flow, jax.tree.unflatten(tree, [w + 0.05 * jax.random.normal(k, w.shape, w.dtype)
                                           for w, k in zip(leaves, keys)])


def monte_carlo_kl(d1, d2, key, n: int = 200_000):
    """``KL(d1 || d2) = E_{x ~ d1}[log d1(x) - log d2(x)]`` and its standard error."""
    x, lp1 = d1.sample_and_log_prob(seed=key, sample_shape=n)
    diff = np.asarray(lp1 - d2.log_prob(x))
    return float(diff.mean()), float(diff.std() / np.sqrt(n))


# ---------------------------------------------------------------- 1. KL divergence

def test_kl_between_flows_with_different_params_is_not_silently_zero():
    """distrax declared the bijectors equal by their printed jaxprs (params are hidden constants
    there) and returned KL(latent || latent) = 0; the true KL (Monte Carlo) is far from 0."""
    flow, p1 = setup(0)
    _, p2 = setup(1)
    d1, d2 = jaxflow.as_distribution(flow, p1), jaxflow.as_distribution(flow, p2)
    estimate, error = monte_carlo_kl(d1, d2, jax.random.key(7))
    assert estimate > 0.1 and estimate > 20 * error
    with pytest.raises(NotImplementedError, match="not the same flow"):
        d1.kl_divergence(d2)
    with pytest.raises(NotImplementedError):
        d2.kl_divergence(d1)
    # a hand-built Transformed around the other flow on either side: the flow's rule still applies
    plain = distrax.Transformed(jaxflow.standard_normal(2, jnp.float64), jaxflow.as_bijector(flow, p2))
    with pytest.raises(NotImplementedError):
        d1.kl_divergence(plain)
    with pytest.raises(NotImplementedError):
        plain.kl_divergence(d1)
    with pytest.raises(NotImplementedError):  # and both hand-built: distrax's own rule is guarded
        distrax.Transformed(d1.distribution, d1.bijector).kl_divergence(plain)
    np.testing.assert_allclose(float(plain.kl_divergence(distrax.Transformed(plain.distribution, plain.bijector))), 0.0)
    with pytest.raises(NotImplementedError):  # a different context is a different density too
        conditional = jaxflow.RealNVP(dim=2, num_flows=2, hidden_dim=8, context_dim=1)
        params = jaxflow.init(conditional, jax.random.key(0), dtype=jnp.float64)
        jaxflow.as_distribution(conditional, params, context=jnp.zeros(1)).kl_divergence(
            jaxflow.as_distribution(conditional, params, context=jnp.ones(1)))


def test_kl_with_the_same_bijector_is_the_latents_kl():
    """Same flow, same params (the same object or an equal copy): KL is the latents' KL, which a
    bijection preserves; checked against Monte Carlo on the transformed densities."""
    flow, params = setup(0)
    copy = jax.tree.map(lambda w: jnp.array(w, copy=True), params)
    assert float(jaxflow.as_distribution(flow, params).kl_divergence(jaxflow.as_distribution(flow, copy))) == 0.0
    latent1 = distrax.MultivariateNormalDiag(jnp.array([0.5, -0.3]), jnp.array([1.2, 0.8]))
    latent2 = distrax.MultivariateNormalDiag(jnp.array([-0.2, 0.4]), jnp.array([0.9, 1.5]))
    d1 = jaxflow.as_distribution(flow, params, latent=latent1)
    d2 = jaxflow.as_distribution(flow, copy, latent=latent2)
    exact = float(latent1.kl_divergence(latent2))
    np.testing.assert_allclose(float(d1.kl_divergence(d2)), exact, rtol=1e-12)
    estimate, error = monte_carlo_kl(d1, d2, jax.random.key(8))
    assert abs(estimate - exact) < 5 * error, (estimate, exact, error)


def test_flow_bijector_same_as():
    flow, params = setup(0)
    _, other = setup(1)
    bijector = jaxflow.as_bijector(flow, params)
    assert bijector.same_as(bijector)
    assert bijector.same_as(jaxflow.as_bijector(flow, params))
    assert bijector.same_as(jaxflow.as_bijector(flow, jax.tree.map(np.asarray, params)))  # equal leaves
    assert not bijector.same_as(jaxflow.as_bijector(flow, other))
    leaves, tree = jax.tree.flatten(params)  # one entry of one leaf changed by 1e-9
    nudged = jax.tree.unflatten(tree, [leaves[0].at[(0,) * leaves[0].ndim].add(1e-9)] + leaves[1:])
    assert not bijector.same_as(jaxflow.as_bijector(flow, nudged))
    float32 = jax.tree.map(lambda w: w.astype(jnp.float32), params)
    assert not bijector.same_as(jaxflow.as_bijector(flow, float32))
    wider = jaxflow.RealNVP(dim=2, num_flows=4, hidden_dim=16, scale="tanh")
    assert not bijector.same_as(jaxflow.FlowBijector(wider, params))
    assert not bijector.same_as(distrax.Block(distrax.ScalarAffine(0.0), 1))
    # traced params are the same only as themselves (their values are unknown)
    seen = []
    same = lambda p, q: jaxflow.as_bijector(flow, p).same_as(jaxflow.as_bijector(flow, q))
    jax.jit(lambda p, q: seen.extend([same(p, p), same(p, q)]))(params, params)
    assert seen == [True, False]


# ---------------------------------------------------------------- 2. shard_map

SHARD_MAP_SCRIPT = r'''
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0"
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
import jaxflow  # noqa: E402

assert jax.device_count() == 4, jax.devices()
mesh = jax.make_mesh((4,), ("data",))
failures = []


def sharded(fn, args, in_specs, out_specs):
    placed = [jax.device_put(a, NamedSharding(mesh, s)) for a, s in zip(args, in_specs)]
    return jax.shard_map(fn, mesh=mesh, in_specs=tuple(in_specs), out_specs=out_specs)(*placed)


def check(name, run_sharded, run_reference):
    try:
        got = jax.block_until_ready(run_sharded())
    except Exception as e:  # report every failure, not only the first
        failures.append(f"{name}: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
        return
    want = jax.block_until_ready(run_reference())
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype != b.dtype or not np.allclose(a, b, rtol=1e-12, atol=1e-12):
            failures.append(f"{name}: differs from the unsharded result ({a.shape} vs {b.shape})")
            return
    print("ok", name, flush=True)


def run(label, flow, context_dim):
    params = jaxflow.init(flow, jax.random.key(0), dtype=jnp.float64)
    leaves, tree = jax.tree.flatten(params)  # off the identity initialisation: every layer acts
    keys = jax.random.split(jax.random.key(1), len(leaves))
    params = jax.tree.unflatten(tree, [w + 0.1 * jax.random.normal(k, w.shape, w.dtype) for w, k in zip(leaves, keys)])
    x = jax.random.normal(jax.random.key(2), (16, *flow.event_shape), jnp.float64)
    c = jax.random.normal(jax.random.key(3), (16, context_dim), jnp.float64) if context_dim else None
    data = [x] if c is None else [x, c]
    specs = [P()] + [P("data")] * len(data)
    kw = lambda cc: {} if not cc else {"context": cc[0]}
    for name, fn, outs in [
        ("f", jaxflow.f, (P("data"), P("data"))),
        ("g", jaxflow.g, P("data")),
        ("g_and_log_det", jaxflow.g_and_log_det, (P("data"), P("data"))),
        ("log_det", jaxflow.log_det, P("data")),
        ("log_prob", jaxflow.log_prob, P("data")),
    ]:
        body = lambda p, v, *cc, fn=fn: fn(flow, p, v, **kw(cc))
        check(f"{label}.{name}", lambda: sharded(body, [params, *data], specs, outs), lambda: body(params, *data))
    # sampling: one key per shard (4 contexts per shard for the conditional flow: draws (3, 4, D))
    shard_keys = jax.random.split(jax.random.key(4), 4)
    axis = 0 if c is None else 1
    out = P("data") if c is None else P(None, "data")
    for name, fn in [("sample_and_log_prob", jaxflow.sample_and_log_prob), ("sample", jaxflow.sample)]:
        body = lambda p, k, *cc, fn=fn: fn(flow, p, k[0], 3, **kw(cc))
        outs = (out, out) if name == "sample_and_log_prob" else out

        def reference(fn=fn):
            parts = [fn(flow, params, shard_keys[i], 3, **({} if c is None else {"context": c[4 * i:4 * i + 4]}))
                     for i in range(4)]
            return jax.tree.map(lambda *a: jnp.concatenate(a, axis=axis), *parts)

        check(f"{label}.{name}", lambda: sharded(body, [params, shard_keys] + ([c] if c is not None else []),
                                                 [P(), P("data")] + ([P("data")] if c is not None else []), outs),
              reference)


run("RealNVP", jaxflow.RealNVP(dim=3, num_flows=3, hidden_dim=8), 0)
composed = jaxflow.Flow(event_shape=(4,), context_dim=2, layers=jaxflow.Repeat(jaxflow.Chain(
    jaxflow.ActNorm(), jaxflow.AffineCoupling(mask="alternate"), jaxflow.LULinear(), jaxflow.Permute()), 3))
run("composed", composed, 2)
print("FAILURES", failures)
sys.exit(1 if failures else 0)
'''


def test_every_function_runs_under_shard_map():
    """f, g, g_and_log_det, log_det, log_prob, sample and sample_and_log_prob of a RealNVP and of a
    conditional composition (ActNorm, alternate-mask coupling, LULinear, Permute in a Repeat) under
    ``jax.shard_map`` on 4 forced CPU devices equal the unsharded results. Failed before the
    scan's log-det carry was built from the input (a fresh ``jnp.zeros`` is not device-varying)."""
    result = run_python(SHARD_MAP_SCRIPT, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "FAILURES []" in result.stdout


# ---------------------------------------------------------------- 3. import cost, default latent

def test_import_jaxflow_does_not_import_distrax_or_tfp():
    """distrax and TFP were 2-3 s of ``import jaxflow``; the core functions do not need them."""
    code = textwrap.dedent("""
        import sys
        import jax, jax.numpy as jnp
        import jaxflow
        HEAVY = ('distrax', 'tensorflow_probability', 'tensorflow', 'chex')
        heavy = lambda: sorted(m for m in sys.modules if m.split('.')[0] in HEAVY)
        assert not heavy(), heavy()
        flow = jaxflow.RealNVP(dim=2, num_flows=2, hidden_dim=4)
        params = jaxflow.init(flow, jax.random.key(0))
        x = jaxflow.sample(flow, params, jax.random.key(1), 3)
        jaxflow.log_prob(flow, params, x); jaxflow.f(flow, params, x); jaxflow.g_steps(flow, params, x)
        try:
            jaxflow.log_prob(flow, params, x, latent='normal')
        except TypeError as e:
            assert 'latent must be a distrax.Distribution' in str(e)
        assert not heavy(), heavy()
        assert 'as_distribution' in dir(jaxflow)
        dist = jaxflow.as_distribution(flow, params)   # loads distrax on first use
        assert 'distrax' in sys.modules and isinstance(dist, sys.modules['distrax'].Transformed)
        from jaxflow import FlowBijector, as_bijector
        print('ok')
    """)
    result = run_python(code, timeout=300)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=lambda d: d.__name__)
@pytest.mark.parametrize("event_shape", [(1,), (3,), (2, 3)])
@pytest.mark.parametrize("sample_shape", [(), 5, (4, 3), (0,)])
def test_default_latent_matches_distrax_standard_normal(event_shape, sample_shape, dtype):
    """The distrax-free default latent: the same draws bit for bit for the same key, and the same
    log-density (1e-12 in float64) as ``jaxflow.standard_normal`` (distrax's N(0, I))."""
    ours, theirs = StandardNormal(event_shape, dtype), jaxflow.standard_normal(event_shape, dtype)
    for seed in range(3):
        key = jax.random.key(seed)
        a, b = ours.sample(seed=key, sample_shape=sample_shape), theirs.sample(seed=key, sample_shape=sample_shape)
        assert a.shape == b.shape and a.dtype == b.dtype == dtype
        assert np.array_equal(np.asarray(a).view(np.uint8), np.asarray(b).view(np.uint8))
        x = 3 * jax.random.normal(jax.random.fold_in(key, 1), (6, *event_shape), dtype)
        tol = 1e-12 if dtype == jnp.float64 else 1e-5
        lp = ours.log_prob(x)
        assert lp.dtype == dtype and lp.shape == (6,)
        np.testing.assert_allclose(np.asarray(lp), np.asarray(theirs.log_prob(x)), rtol=tol, atol=tol)


def test_flow_sample_uses_the_distrax_draws():
    """jaxflow.sample with the default latent is g of distrax's N(0, I) draws for the same key."""
    flow, params = setup(0)
    key = jax.random.key(3)
    z = jaxflow.standard_normal(2, jnp.float64).sample(seed=key, sample_shape=(4, 5))
    np.testing.assert_allclose(jaxflow.sample(flow, params, key, (4, 5)), jaxflow.g(flow, params, z),
                               rtol=1e-12, atol=1e-12)
    x, lp = jaxflow.sample_and_log_prob(flow, params, key, (4, 5))
    np.testing.assert_allclose(lp, jaxflow.as_distribution(flow, params).log_prob(x), rtol=1e-10, atol=1e-10)


def test_a_user_distrax_latent_is_still_recognised():
    flow, params = setup(0)
    latent = distrax.MultivariateNormalDiag(jnp.ones(2), 2 * jnp.ones(2))
    x = jnp.ones((3, 2))
    z, ld = jaxflow.f(flow, params, x)
    np.testing.assert_allclose(jaxflow.log_prob(flow, params, x, latent=latent), latent.log_prob(z) + ld, rtol=1e-12)
    with pytest.raises(ValueError, match="event shape"):
        jaxflow.log_prob(flow, params, x, latent=distrax.MultivariateNormalDiag(jnp.zeros(3), jnp.ones(3)))
    with pytest.raises(TypeError, match="latent must be a distrax.Distribution"):
        jaxflow.log_prob(flow, params, x, latent=StandardNormal(2, jnp.float64))


# ---------------------------------------------------------------- 4. counts and compute_dtype

def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message, message
    return message


@pytest.mark.parametrize("bad,error", [(-1, ValueError), (2.5, TypeError), (True, TypeError), ("3", TypeError),
                                       (jnp.float32(3), TypeError), (jnp.array([3]), TypeError),
                                       (np.int64(-2), ValueError), ((2, -1), ValueError), ((2, 1.5), TypeError),
                                       (None, TypeError)])
def test_bad_sample_counts_raise_one_line_errors(bad, error):
    flow, params = setup(0)
    for fn in (jaxflow.sample, jaxflow.sample_and_log_prob):
        with pytest.raises(error) as excinfo:
            fn(flow, params, jax.random.key(0), bad)
        assert "num_samples" in one_line(excinfo)


@pytest.mark.parametrize("count,shape", [(jnp.int32(3), (3,)), (np.int64(3), (3,)), (np.array(2), (2,)),
                                         ((jnp.int32(2), np.int16(3)), (2, 3)), ([2, 1], (2, 1)), (0, (0,))])
def test_integer_scalar_counts_are_valid(count, shape):
    flow, params = setup(0)
    assert jaxflow.sample(flow, params, jax.random.key(0), count).shape == (*shape, 2)
    assert jaxflow.sample_and_log_prob(flow, params, jax.random.key(0), count)[1].shape == shape


def test_a_traced_count_is_a_one_line_type_error():
    flow, params = setup(0)
    with pytest.raises(TypeError) as excinfo:
        jax.jit(lambda n: jaxflow.sample(flow, params, jax.random.key(0), n))(3)
    assert "concrete" in one_line(excinfo)


@pytest.mark.parametrize("dtype", ["int8", "int32", "float8", "complex64", "bool", jnp.int8, 3])
def test_compute_dtype_must_be_a_float_name(dtype):
    with pytest.raises(ValueError) as excinfo:
        jaxflow.RealNVP(dim=2, num_flows=2, compute_dtype=dtype)
    assert "compute_dtype" in one_line(excinfo)
    with pytest.raises(ValueError) as excinfo:
        jaxflow.MLP(compute_dtype=dtype)
    assert "compute_dtype" in one_line(excinfo)
    for ok in (None, "float32", "bfloat16"):
        jaxflow.RealNVP(dim=2, num_flows=2, compute_dtype=ok)


def test_as_distribution_draws_independently_for_each_context_of_a_batch():
    """A batch of B equal contexts: each column of sample(n) is its own draw (one latent draw
    reused across the batch made all B columns equal)."""
    flow = jaxflow.RealNVP(dim=2, num_flows=2, hidden_dim=8, context_dim=1)
    params = jaxflow.init(flow, jax.random.key(0), jnp.float64)
    context = jnp.ones((3, 1), jnp.float64)
    dist = jaxflow.as_distribution(flow, params, context=context)
    x = dist.sample(seed=jax.random.key(1), sample_shape=5)
    assert x.shape == (5, 3, 2)
    assert not np.allclose(np.asarray(x[:, 0]), np.asarray(x[:, 1]))
    np.testing.assert_allclose(dist.log_prob(x), jaxflow.log_prob(flow, params, x, context=context), rtol=1e-12)
