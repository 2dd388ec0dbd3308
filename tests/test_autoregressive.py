"""Masked autoregressive flows: MADE's autoregressive property on the autodiff Jacobian, the inverse's
exactness and its program size in ``D``, the mass of a conditional MAF, coverage, checkpoints, the
presets, and one-line errors. Log-dets against the Jacobian in both directions are in
:mod:`test_layers`' table of flows; the torch twins in ``parity_tests``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxflow
from jaxflow import MADE, AffineTransform, Invert, MaskedAutoregressive, RQSpline
from jaxflow.core.serialize import spec_from_json, spec_to_json
from core_helpers import grid_densities, perturb
from core_tolerances import assert_close

# single layers leave the first coordinate of their order elementwise (the coverage test checks the warning)
pytestmark = pytest.mark.filterwarnings("ignore:.*never transformed by a coupling:UserWarning")

ORDER = (3, 0, 4, 1, 2)  # coordinate i is at position ORDER[i]: 1, 3, 4, 0, 2 in that order


def test_made_output_j_depends_on_the_coordinates_before_j_in_the_order_and_on_the_whole_context():
    """On the autodiff Jacobian, not the masks: d out_{pD+j} / d x_i is 0 exactly where
    order(i) >= order(j), and nonzero elsewhere and for every context input (the first coordinate too)."""
    dim, context_dim, num_params = 5, 2, 3
    made = MADE(16, 2, order=ORDER)
    params = made.init(jax.random.key(0), dim + context_dim, num_params * dim, jnp.float64)
    h = jnp.asarray(np.random.default_rng(0).standard_normal(dim + context_dim))
    jacobian = np.asarray(jax.jacfwd(lambda h: made.apply(params, h, num_params * dim, dim))(h))
    jacobian = jacobian.reshape(num_params, dim, dim + context_dim)  # [p, j, input]
    order = np.asarray(ORDER)
    allowed = order[None, :] < order[:, None]  # [j, i]
    for p in range(num_params):
        assert (jacobian[p, :, :dim][~allowed] == 0).all()
        assert (jacobian[p, :, :dim][allowed] != 0).all()
        assert (jacobian[p, :, dim:] != 0).all()


def test_the_layer_jacobian_is_triangular_in_its_order():
    layer = MaskedAutoregressive(RQSpline(4, 2.0), MADE(16, 1, order=ORDER), identity_init=False)
    flow = jaxflow.Flow((5,), layer, context_dim=1)
    params = jaxflow.init(flow, jax.random.key(1), jnp.float64)
    x = jnp.asarray(np.random.default_rng(1).standard_normal(5))
    jacobian = np.asarray(jax.jacfwd(lambda x: jaxflow.f(flow, params, x, context=jnp.ones(1))[0])(x))
    order = np.asarray(ORDER)
    assert (jacobian[order[None, :] > order[:, None]] == 0).all()  # z_j does not see later coordinates
    assert (np.diag(jacobian) > 0).all()


@pytest.mark.parametrize("dim, transform", [(64, AffineTransform("tanh", 2.0)), (64, RQSpline(5, 2.0)),
                                            (1, RQSpline(5, 2.0))], ids=["64-affine", "64-spline", "1-spline"])
def test_g_inverts_f_to_float64_round_off_for_dimensions_up_to_64(dim, transform):
    flow = jaxflow.Flow((dim,), MaskedAutoregressive(transform, MADE(32, 1), identity_init=False), context_dim=2)
    params = jaxflow.init(flow, jax.random.key(2), jnp.float64)
    rng = np.random.default_rng(2)
    x, context = jnp.asarray(rng.standard_normal((8, dim))), jnp.asarray(rng.standard_normal((8, 2)))
    z, ld_f = jaxflow.f(flow, params, x, context=context)
    x_back, ld_g = jaxflow.g_and_log_det(flow, params, z, context=context)
    assert float(jnp.max(jnp.abs(z - x))) > 1e-2
    assert_close(x_back, x, "round_trip")
    assert_close(ld_f + ld_g, jnp.zeros_like(ld_f), "log_det_cancel")


def test_the_inverse_traces_one_loop_whatever_the_dimension():
    """``g`` is one ``fori_loop`` over the D positions: its jaxpr has as many equations for D = 4 as
    for D = 64 (a Python loop would trace D copies of the network)."""
    def count(jaxpr) -> int:
        """Equations of ``jaxpr`` and of the jaxprs nested in them (the loop's body)."""
        total = 0
        for eqn in jaxpr.eqns:
            total += 1
            for value in eqn.params.values():
                for sub in value if isinstance(value, (tuple, list)) else (value,):
                    inner = getattr(sub, "jaxpr", sub)
                    total += count(inner) if hasattr(inner, "eqns") else 0
        return total

    def equations(dim):
        layer = MaskedAutoregressive(RQSpline(), MADE(16, 1))
        params = jax.eval_shape(lambda: layer.init(jax.random.key(0), (dim,), 0, jnp.float32))
        z = jax.ShapeDtypeStruct((3, dim), jnp.float32)
        return count(jax.make_jaxpr(lambda p, z: layer.inverse(p, z, None, (dim,)))(params, z).jaxpr)

    assert equations(4) == equations(64)


def test_a_conditional_maf_has_mass_one_for_each_context():
    flow = jaxflow.MAF(2, num_layers=3, hidden_dim=8, context_dim=1)
    params = perturb(jaxflow.init(flow, jax.random.key(0), jnp.float64), 1, scale=0.1)
    densities, cell = grid_densities(flow, params, (-1.5, 2.0))
    for density in densities:
        assert_close(density.sum() * cell, jnp.asarray(1.0, jnp.float64), "integral_composed")
    assert float(0.5 * jnp.abs(densities[0] - densities[1]).sum() * cell) > 0.05  # the context matters


def test_coverage_the_first_coordinate_of_the_order_is_elementwise():
    natural = MaskedAutoregressive()
    with pytest.warns(UserWarning, match=r"coordinate\(s\) \[0\]"):
        jaxflow.Flow((3,), jaxflow.Repeat(natural, 2))
    with pytest.warns(UserWarning, match=r"coordinate\(s\) \[2\]"):  # reversed order: 2 comes first
        jaxflow.Flow((3,), MaskedAutoregressive(conditioner=MADE(order=(2, 1, 0))))
    coupling = jaxflow.AffineCoupling("half")  # carries x[1:] untransformed to z[:2]
    assert Invert(coupling).untransformed(np.arange(3), (3,)).tolist() == [-1, 0, 1]
    assert coupling.untransformed(np.arange(3), (3,)).tolist() == [1, 2, -1]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jaxflow.MAF(3)  # reversed orders between layers cover every coordinate
        jaxflow.Flow((3,), jaxflow.Repeat(Invert(jaxflow.MAF(3).layers.layer), 2))


def test_invert_swaps_directions_and_keeps_the_inner_params():
    layer = MaskedAutoregressive(AffineTransform("tanh", 2.0), MADE(8, 1), identity_init=False)
    maf, iaf = jaxflow.Flow((3,), layer), jaxflow.Flow((3,), Invert(layer))
    params = jaxflow.init(maf, jax.random.key(3), jnp.float64)
    assert jax.tree.structure(jaxflow.init(iaf, jax.random.key(3), jnp.float64)) == jax.tree.structure(params)
    x = jnp.asarray(np.random.default_rng(3).standard_normal((4, 3)))
    for got, want in zip(jaxflow.f(iaf, params, x), jaxflow.g_and_log_det(maf, params, x)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    for got, want in zip(jaxflow.g_and_log_det(iaf, params, x), jaxflow.f(maf, params, x)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_invert_init_ignores_data_an_inverted_actnorm_starts_at_the_identity():
    flow = jaxflow.Flow((2,), jaxflow.Chain(Invert(jaxflow.ActNorm()), jaxflow.ActNorm()))
    data = jnp.asarray(3.0 + 2.0 * np.random.default_rng(4).standard_normal((64, 2)))
    params = jaxflow.init(flow, jax.random.key(0), jnp.float64, data=data)
    assert not np.asarray(params[0]["shift"]).any() and not np.asarray(params[0]["log_scale"]).any()
    assert_close(params[1]["shift"], data.mean(0), "same_math")  # the layer after it sees the data


def test_maf_and_iaf_specs_round_trip_through_json_and_model_files(tmp_path):
    for flow in (jaxflow.MAF(3, num_layers=2, hidden_dim=8, transform=RQSpline(3), context_dim=1),
                 jaxflow.Flow((3,), jaxflow.Repeat(Invert(jaxflow.Chain(MaskedAutoregressive(
                     conditioner=MADE(8, 0, order=(1, 2, 0))), jaxflow.Permute("random", 1))), 2)),
                 jaxflow.NeuralSplineFlow(3, num_layers=1, hidden_dim=8, autoregressive=True)):
        assert spec_from_json(spec_to_json(flow)) == flow
        params = perturb(jaxflow.init(flow, jax.random.key(0)), 5, scale=0.1)
        jaxflow.save(str(tmp_path / "model.jaxflow"), flow, params)
        loaded, loaded_params = jaxflow.load(str(tmp_path / "model.jaxflow"))
        assert loaded == flow
        x = jnp.ones((2, 3), jnp.float32)
        context = jnp.ones((2, 1), jnp.float32) if flow.context_dim else None
        np.testing.assert_array_equal(np.asarray(jaxflow.log_prob(flow, params, x, context=context)),
                                      np.asarray(jaxflow.log_prob(loaded, loaded_params, x, context=context)))


@pytest.mark.parametrize("flow", [jaxflow.MAF(2, num_layers=2, hidden_dim=16),
                                  jaxflow.NeuralSplineFlow(2, num_layers=2, hidden_dim=16, autoregressive=True)],
                         ids=["maf", "nsf-ar"])
def test_presets_train_a_few_steps_and_sample(flow):
    from jaxflow import data, train

    splits = data.load_dataset("moons")
    x = splits.train[:1000]
    flow = train.standardize(flow, x)
    config = train.TrainConfig(steps=60, batch_size=128, lr=1e-2, eval_every=30, patience=0)
    before = train.mean_nll(flow, jaxflow.init(flow, jax.random.key(config.seed)), splits.val[:500])
    result = train.fit(flow, x, splits.val[:500], config, progress=False)
    assert train.mean_nll(flow, result.state.best_params, splits.val[:500]) < before - 0.15
    samples = jaxflow.sample(flow, result.state.best_params, jax.random.key(1), 7)
    assert samples.shape == (7, 2) and bool(jnp.isfinite(samples).all())


@pytest.mark.parametrize("make, error, message", [
    (lambda: MADE(order=(0, 0, 1)), ValueError, "MADE: order must be a permutation of range(3), got (0, 0, 1)"),
    (lambda: MADE(order="ab"), TypeError, "MADE: order must be a tuple of ints"),
    (lambda: MADE(hidden_dim=0), ValueError, "MADE: hidden_dim must be >= 1, got 0"),
    (lambda: MADE(activation="swish"), ValueError, "MADE: activation must be one of"),
    (lambda: MaskedAutoregressive(conditioner=jaxflow.MLP()), TypeError,
     "MaskedAutoregressive: conditioner must be a jaxflow.MADE"),
    (lambda: MaskedAutoregressive(transform="affine"), TypeError, "MaskedAutoregressive: transform must be"),
    (lambda: jaxflow.Coupling(conditioner=MADE()), TypeError, "Coupling: MADE is the conditioner of"),
    (lambda: jaxflow.Flow((3,), MaskedAutoregressive(conditioner=MADE(order=(1, 0)))), ValueError,
     "MADE: order has 2 entries, the events have D = 3 coordinates"),
    (lambda: jaxflow.Flow((2, 2, 1), MaskedAutoregressive()), ValueError,
     "MaskedAutoregressive: acts on vector events (D,)"),
    (lambda: Invert("layer"), TypeError, "Invert: layer must be a jaxflow layer, got str"),
    (lambda: jaxflow.Flow((2, 2, 1), Invert(jaxflow.Squeeze())), ValueError,
     "Invert: the inverted layer must keep the event shape"),
    (lambda: jaxflow.MAF(1), ValueError, "MAF: dim must be >= 2, got 1"),
    (lambda: jaxflow.MAF(3, num_layers=0), ValueError, "MAF: num_layers must be >= 1, got 0"),
    (lambda: jaxflow.MAF(3, hidden_dim=-1), ValueError, "MAF: hidden_dim must be >= 1, got -1"),
    (lambda: jaxflow.MAF(3, transform=jaxflow.MLP()), TypeError, "MAF: transform must be"),
    (lambda: jaxflow.NeuralSplineFlow(3, autoregressive=1), TypeError, "NeuralSplineFlow: autoregressive must be a bool"),
])
def test_bad_arguments_raise_one_line_errors(make, error, message):
    with pytest.raises(error) as info:
        make()
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
