"""NumPyro interop (jaxflow.interop.numpyro): the distribution is jaxflow's density exactly, the transform's
log-det is the Jacobian's, NUTS samples a flow prior correctly, AutoFlowGuide trains by SVI and drives NeuTra."""

import math
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

numpyro = pytest.importorskip("numpyro")

import numpyro.distributions as dist  # noqa: E402
from numpyro.diagnostics import effective_sample_size  # noqa: E402
from numpyro.infer import MCMC, NUTS, SVI, Trace_ELBO  # noqa: E402
from numpyro.infer.reparam import NeuTraReparam  # noqa: E402

import jaxflow  # noqa: E402
from jaxflow.interop.numpyro import AutoFlowGuide, FlowTransform, as_numpyro  # noqa: E402
from core_tolerances import assert_close  # noqa: E402
from test_library_hardening import run_python, setup  # noqa: E402

# NumPyro's own code (NUTS, SVI) mixes int and float arrays, which conftest's strict promotion
# refuses; jaxflow's code inside runs strict in the other tests
numpyro_promotion = lambda: jax.numpy_dtype_promotion("standard")

COND = jaxflow.RealNVP(dim=2, num_flows=2, hidden_dim=8, num_hidden=1, context_dim=1)


def test_log_prob_and_sample_are_jaxflows_exactly_with_the_right_shapes_and_support():
    flow, params = setup(0)
    d = as_numpyro(flow, params)
    assert (d.batch_shape, d.event_shape, d.support) == ((), (2,), dist.constraints.real_vector)
    x = d.sample(jax.random.key(1), (5,))
    assert x.shape == (5, 2)
    np.testing.assert_array_equal(x, jaxflow.sample(flow, params, jax.random.key(1), 5))
    np.testing.assert_array_equal(d.log_prob(x), jaxflow.log_prob(flow, params, x))
    assert d.sample(jax.random.key(1)).shape == (2,)

    params = jaxflow.init(COND, jax.random.key(0), jnp.float64)  # random conditioners, not the identity
    context = jnp.array([[0.0], [1.0], [-2.0]])
    d = as_numpyro(COND, params, context)
    assert (d.batch_shape, d.event_shape) == ((3,), (2,))
    x = d.sample(jax.random.key(2), (4,))
    assert x.shape == (4, 3, 2)
    np.testing.assert_array_equal(d.log_prob(x), jaxflow.log_prob(COND, params, x, context=context))

    image = jaxflow.Flow(event_shape=(2, 3), layers=jaxflow.Chain(jaxflow.ActNorm(), jaxflow.LULinear()))
    d = as_numpyro(image, jaxflow.init(image, jax.random.key(0), jnp.float64))
    assert d.event_shape == (2, 3) and d.support.event_dim == 2 and d.sample(jax.random.key(3), (4,)).shape == (4, 2, 3)
    with pytest.raises(ValueError, match="context: this flow is conditional"):
        as_numpyro(COND, params)


def test_the_transform_log_det_is_the_jacobians_and_it_inverts():
    flow, params = setup(3)
    transform = FlowTransform(flow, params)
    z = jax.random.normal(jax.random.key(0), (4, 2), jnp.float64)
    x, kept = transform.call_with_intermediates(z)
    jacobians = jax.vmap(jax.jacfwd(transform))(z)
    assert_close(transform.log_abs_det_jacobian(z, x), jnp.linalg.slogdet(jacobians)[1], "log_det_vs_jacobian")
    np.testing.assert_array_equal(transform.log_abs_det_jacobian(z, x, kept), kept)
    assert_close(transform.inv(x), z, "round_trip")
    # through jit as a pytree (its params travel as leaves, the flow as static data)
    assert_close(jax.jit(lambda t, z: t(z))(transform, z), x, "same_math")


def test_nuts_on_a_flow_prior_reproduces_its_moments():
    """NUTS (200 + 400 draws) on the flow's density: its mean and second moment agree with 200k
    exact draws of the flow within 4 Monte Carlo standard errors (sd / sqrt(ESS))."""
    flow, params = setup(1)
    mcmc = MCMC(NUTS(lambda: numpyro.sample("x", as_numpyro(flow, params))), num_warmup=200, num_samples=400,
                progress_bar=False)
    with numpyro_promotion():
        mcmc.run(jax.random.PRNGKey(0))
    x = np.asarray(mcmc.get_samples()["x"])
    exact = np.asarray(jaxflow.sample(flow, params, jax.random.key(1), 200_000))
    for statistic in (lambda a: a, lambda a: a**2):
        chain = statistic(x)
        stderr = chain.std(0) / np.sqrt(effective_sample_size(chain[None]))
        assert np.all(np.abs(chain.mean(0) - statistic(exact).mean(0)) < 4 * stderr), (chain.mean(0), stderr)


def _model():
    """a ~ N(1, 2^2), b | a ~ N(a, 0.5^2), log s ~ N(0, 1): the posterior is the prior (no data),
    with a scale site so that the guide's latent space is unconstrained through biject_to."""
    a = numpyro.sample("a", dist.Normal(1.0, 2.0))
    numpyro.sample("b", dist.Normal(a, 0.5))
    numpyro.sample("s", dist.LogNormal(0.0, 1.0))


@pytest.fixture(scope="module")
def trained_guide():
    guide = AutoFlowGuide(_model, flow=lambda d: jaxflow.RealNVP(dim=d, num_flows=4, hidden_dim=8, num_hidden=1,
                                                                  scale="tanh", identity_init=True))
    svi = SVI(_model, guide, numpyro.optim.Adam(1e-2), Trace_ELBO(num_particles=16))
    with numpyro_promotion():
        result = svi.run(jax.random.PRNGKey(0), 300, progress_bar=False)
    return guide, result


def test_auto_flow_guide_trains_by_svi(trained_guide):
    """The loss (-ELBO = KL(q || p) here, log Z = 0) falls from 2.07 (first 10 steps) to 0.11
    (last 50, measured); the param site holds the flow's parameters."""
    guide, result = trained_guide
    losses = np.asarray(result.losses)
    assert guide.flow == jaxflow.RealNVP(dim=3, num_flows=4, hidden_dim=8, num_hidden=1, scale="tanh",
                                         identity_init=True)
    assert losses[-50:].mean() < 0.3 < 1.5 < losses[:10].mean()
    params = result.params["auto_flow"]
    assert jax.tree.structure(params) == jax.tree.structure(jaxflow.init(guide.flow, jax.random.key(0), jnp.float64))
    with numpyro_promotion():
        draws = guide.sample_posterior(jax.random.PRNGKey(1), result.params, sample_shape=(4000,))
    assert abs(float(draws["a"].mean()) - 1.0) < 0.2 and abs(float(draws["b"].std()) - math.hypot(2, 0.5)) < 0.3
    assert float(draws["s"].min()) > 0


def test_neutra_with_the_guide_recovers_the_posterior(trained_guide):
    """NUTS in the flow's latent space (NeuTraReparam): the model's sites come back with the right
    shapes and the posterior's moments (a: mean 1, sd 2; b: sd sqrt(4.25); log s: mean 0, sd 1)
    within 4 Monte Carlo standard errors."""
    guide, result = trained_guide
    neutra = NeuTraReparam(guide, result.params)
    mcmc = MCMC(NUTS(neutra.reparam(_model)), num_warmup=150, num_samples=300, progress_bar=False)
    with numpyro_promotion():
        mcmc.run(jax.random.PRNGKey(2))
        latent = mcmc.get_samples()["auto_shared_latent"]
        draws = neutra.transform_sample(latent)
    assert latent.shape == (300, 3)
    assert {k: v.shape for k, v in draws.items()} == {"a": (300,), "b": (300,), "s": (300,)}
    truths = ((draws["a"], 1.0, 2.0), (draws["b"], 1.0, math.hypot(2, 0.5)), (jnp.log(draws["s"]), 0.0, 1.0))
    for chain, mean, sd in truths:
        chain = np.asarray(chain)
        stderr = sd / math.sqrt(effective_sample_size(chain[None, :, None])[0])
        assert abs(chain.mean() - mean) < 4 * stderr, (chain.mean(), mean, stderr)


def test_a_flow_of_the_wrong_size_is_a_one_line_error():
    guide = AutoFlowGuide(_model, flow=jaxflow.RealNVP(dim=2, num_flows=2, hidden_dim=4))
    with pytest.raises(ValueError, match=r"AutoFlowGuide: the model has 3 unconstrained latent dimensions, so the flow "
                                         r"needs event shape \(3,\) and no context; got event shape \(2,\)"):
        with numpyro_promotion():
            SVI(_model, guide, numpyro.optim.Adam(1e-2), Trace_ELBO()).init(jax.random.PRNGKey(0))
    with pytest.raises(TypeError, match="AutoFlowGuide: flow must be a flow spec"):
        AutoFlowGuide(_model, flow="realnvp")


def test_importing_jaxflow_does_not_import_numpyro():
    code = textwrap.dedent("""
        import sys
        import jaxflow, jaxflow.train, jaxflow.vi
        jaxflow.train.fit_vi
        assert 'numpyro' not in sys.modules, 'numpyro imported'
        assert 'as_numpyro' in dir(jaxflow)
        jaxflow.as_numpyro  # loads numpyro on first use
        assert 'numpyro' in sys.modules
        print('ok')
    """)
    result = run_python(code, timeout=300)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]
