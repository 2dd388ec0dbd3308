"""Every layer kind, alone and composed, against independent truths: slogdet of the autodiff
Jacobian in both directions, dense matrices built by hand from the parameters, the article's
coupling equation written out, the definition of data-dependent init, grid integrals, finite
differences, and explicit per-row evaluation of broadcast contexts.

Parameters are perturbed off the identity (:func:`core_helpers.perturb`), so an ActNorm or
LULinear that silently did nothing would fail.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxflow
from jaxflow import (ActNorm, Affine, AffineCoupling, AffineTransform, Chain, Coupling, Invert, Logit, LULinear, MADE,
                     MaskedAutoregressive, Permute, Repeat, RQSpline)
from core_helpers import event_jacobian_log_det, perturb
from core_tolerances import assert_close

DTYPES = [jnp.float64, jnp.float32]
SMALL = jaxflow.MLP(hidden_dim=8, num_hidden=1)


def coupling(mask="half", scale="tanh", conditioner=SMALL, **options) -> AffineCoupling:
    return AffineCoupling(mask=mask, conditioner=conditioner, scale=scale, **options)


def every_kind(conditioner=SMALL) -> Chain:
    """A chain holding every layer kind, a Repeat among them."""
    return Chain(Affine(0.5, 2.0), ActNorm(), coupling("alternate", "tanh", conditioner), Permute("random", seed=2),
                 LULinear(), Repeat(coupling("half", "tanh", conditioner), 2))


# name -> (event_shape, root layer, context_dim)
FLOWS = {
    # every layer kind alone
    "coupling_half_exp": ((5,), coupling("half", "exp"), 0),
    "coupling_alternate_tanh": ((5,), coupling("alternate", "tanh"), 2),
    "coupling_explicit_sigmoid": ((4,), coupling((False, True, True, False), "sigmoid"), 0),
    # x ~ 1.3 N(0, 1): about a quarter of the points lie in the spline's identity tails beyond 1.5
    "coupling_rqspline": ((5,), Coupling("alternate", SMALL, RQSpline(bins=4, bound=1.5)), 2),
    "coupling_affine_transform": ((4,), Coupling((True, False, False, True), SMALL, AffineTransform("tanh", 2.0)), 0),
    "permute_reverse": ((5,), Permute("reverse"), 0),
    "permute_random": ((5,), Permute("random", seed=3), 0),
    "actnorm": ((5,), ActNorm(), 0),
    "affine": ((3,), Affine(shift=(0.5, -1.0, 2.0), scale=(2.0, 0.25, 1.5)), 0),
    "lulinear": ((5,), LULinear(), 0),
    "logit": ((3,), Chain(Affine(-10.0, 20.0), Logit(0.05)), 0),  # the Affine maps the data x into (0, 1)
    # the elementwise and linear kinds on matrix events (P = 3 positions share the last axis' params)
    "matrix_events": ((3, 4), Chain(ActNorm(), LULinear(), Permute("random", seed=1), Affine(1.0, 3.0)), 0),
    # fixed compositions
    "chain_of_every_kind": ((5,), every_kind(), 2),
    "repeat_of_chain": ((4,), Repeat(Chain(ActNorm(), coupling("alternate", "tanh"), LULinear(),
                                           Permute("reverse")), 3), 0),
    "chain_around_repeat": ((3,), Chain(LULinear(), Repeat(coupling((True, False, True), "sigmoid"), 2), ActNorm(),
                                        coupling("half", "exp")), 1),
    "neural_spline_flow": ((3,), jaxflow.NeuralSplineFlow(3, num_layers=2, bins=5, bound=2.0, hidden_dim=8,
                                                          num_hidden=1).layers, 1),
    # masked autoregressive layers: f in one pass, g in D passes; an order other than the natural one
    "masked_autoregressive_affine": ((4,), MaskedAutoregressive(AffineTransform("tanh", 2.0), MADE(8, 1, (2, 0, 3, 1)),
                                                                identity_init=False), 2),
    "masked_autoregressive_spline": ((5,), MaskedAutoregressive(RQSpline(bins=4, bound=1.5), MADE(8, 1)), 0),
    "inverse_autoregressive": ((4,), Invert(MaskedAutoregressive(AffineTransform("tanh", 2.0), MADE(8, 1))), 1),
    "maf_preset": ((3,), jaxflow.MAF(3, num_layers=2, hidden_dim=8, context_dim=1).layers, 1),
    "invert_of_a_chain": ((3,), Invert(Chain(ActNorm(), coupling("alternate", "tanh"), Permute("random", seed=4))), 0),
}


@functools.lru_cache(maxsize=None)
def setup(name: str, dtype, seed: int = 0):
    """The named flow, perturbed parameters in ``dtype``, events ``x (6, *event)`` and a context (or None)."""
    event_shape, layers, context_dim = FLOWS[name]
    flow = jaxflow.Flow(event_shape=event_shape, layers=layers, context_dim=context_dim)
    return (flow, *draw(flow, dtype, seed))


def draw(flow, dtype, seed: int = 0, rows: int = 6):
    """Perturbed parameters, events ``(rows, *event)`` and a context ``(rows, C)`` (or None), the same
    values in either dtype: drawn in float64 (numpy's generator: no compiles) and cast."""
    params = jax.tree.map(np.asarray, perturb(jaxflow.init(flow, jax.random.key(seed), jnp.float64), seed + 1))
    rng = np.random.default_rng(seed + 2)
    x = 1.3 * rng.standard_normal((rows, *flow.event_shape))
    context = rng.standard_normal((rows, flow.context_dim)) if flow.context_dim else None
    cast = lambda value: None if value is None else jnp.asarray(value, dtype)
    return jax.tree.map(cast, params), cast(x), cast(context)


def check_log_dets_and_inverses(flow, params, x, context):
    """log|det| of f and g against slogdet of the autodiff Jacobian; they cancel; g = f^-1 both ways."""
    shape = flow.event_shape
    per_row = (context,) if context is not None else ()
    forward = lambda v, *c: jaxflow.f(flow, params, v, context=c[0] if c else None)[0]
    inverse = lambda v, *c: jaxflow.g(flow, params, v, context=c[0] if c else None)
    z, ld_f = jaxflow.f(flow, params, x, context=context)
    x_back, ld_g = jaxflow.g_and_log_det(flow, params, z, context=context)
    assert z.dtype == ld_f.dtype == x_back.dtype == x.dtype
    assert_close(ld_f, event_jacobian_log_det(forward, x, shape, *per_row), "layer_stack_log_det_vs_jacobian")
    assert_close(ld_g, event_jacobian_log_det(inverse, z, shape, *per_row), "layer_stack_log_det_vs_jacobian")
    assert_close(ld_f + ld_g, jnp.zeros_like(ld_f), "layer_stack_log_det_cancel")
    assert_close(x_back, x, "layer_stack_round_trip")
    latent = jax.random.normal(jax.random.key(11), x.shape, x.dtype)
    assert_close(jaxflow.f(flow, params, jaxflow.g(flow, params, latent, context=context), context=context)[0],
                 latent, "layer_stack_round_trip")
    return z, ld_f


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("name", list(FLOWS))
def test_log_dets_and_inverses_of_every_kind_and_fixed_compositions(name, dtype):
    flow, params, x, context = setup(name, dtype)
    z, ld_f = check_log_dets_and_inverses(flow, params, x, context)
    if not name.startswith("permute"):  # the perturbed layers really move and scale
        assert float(jnp.max(jnp.abs(z - x))) > 1e-2
        assert float(jnp.max(jnp.abs(ld_f))) > 1e-2


# ---------------------------------------------------------------- random compositions

@st.composite
def compositions(draw_from):
    dim = draw_from(st.integers(2, 5))
    context_dim = draw_from(st.sampled_from([0, 2]))

    def layer():
        kind = draw_from(st.sampled_from(["coupling", "permute", "actnorm", "affine", "lulinear"]))
        if kind == "coupling":
            mask = draw_from(st.one_of(
                st.sampled_from(["half", "alternate"]),
                st.lists(st.booleans(), min_size=dim, max_size=dim).filter(lambda m: any(m) and not all(m)).map(tuple)))
            return coupling(mask, draw_from(st.sampled_from(jaxflow.SCALES)))
        if kind == "permute":
            return Permute(draw_from(st.sampled_from(["reverse", "random"])), seed=draw_from(st.integers(0, 9)))
        if kind == "affine":
            return Affine(draw_from(st.floats(-2, 2)), draw_from(st.floats(0.25, 4)))
        return ActNorm() if kind == "actnorm" else LULinear()

    root = Chain(*[layer() for _ in range(draw_from(st.integers(1, 4)))])
    if draw_from(st.booleans()):
        root = Repeat(root, draw_from(st.integers(1, 3)))
    return jaxflow.Flow(event_shape=(dim,), layers=root, context_dim=context_dim)


@settings(max_examples=10, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(flow=compositions())
def test_log_dets_and_inverses_of_random_compositions(flow):
    check_log_dets_and_inverses(flow, *draw(flow, jnp.float64, seed=4))


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


# ---------------------------------------------------------------- a conditional density

# the leading Affine compresses the data by 0.4, so the (shear-stretched) tails lie inside the grid
CONDITIONAL_2D = jaxflow.Flow(event_shape=(2,), context_dim=1, layers=Chain(
    Affine(0.0, 0.4), ActNorm(), coupling("alternate", "tanh", clamp=1.0), Permute("reverse"), LULinear(),
    coupling("half", "tanh", clamp=1.0)))


def test_conditional_2d_flow_integrates_to_one_for_each_context():
    params = perturb(jaxflow.init(CONDITIONAL_2D, jax.random.key(0), jnp.float64), 1)
    edge = jnp.linspace(-12.0, 12.0, 601, dtype=jnp.float64)
    cell = float(edge[1] - edge[0]) ** 2
    grid = jnp.stack(jnp.meshgrid(edge, edge), axis=-1)  # (601, 601, 2)
    densities = []
    for value in (-1.5, 2.0):
        context = jnp.array([value], jnp.float64)  # (1,): broadcast over the grid's batch axes
        densities.append(jnp.exp(jaxflow.log_prob(CONDITIONAL_2D, params, grid, context=context)))
        assert_close(densities[-1].sum() * cell, jnp.asarray(1.0, jnp.float64), "integral_composed")
    # the context changes the density: total variation distance well above the integration error
    assert float(0.5 * jnp.abs(densities[0] - densities[1]).sum() * cell) > 0.05


# ---------------------------------------------------------------- LULinear, ActNorm, Permute

@pytest.mark.parametrize("event_shape", [(5,), (3, 4)])
def test_lulinear_log_det_is_log_abs_det_of_the_dense_matrix_built_from_the_params(event_shape):
    flow = jaxflow.Flow(event_shape=event_shape, layers=LULinear())
    params, x, _ = draw(flow, jnp.float64, seed=7)
    lower, upper, log_diag = (np.asarray(params[k]) for k in ("lower", "upper", "log_diag"))
    size = event_shape[-1]
    dense = (np.tril(lower, -1) + np.eye(size)) @ (np.triu(upper, 1) + np.diag(np.exp(log_diag)))
    sign, logabsdet = np.linalg.slogdet(dense)
    positions = int(np.prod(event_shape[:-1]))  # W acts on the last axis at every other position
    z, ld = jaxflow.f(flow, params, x)
    assert sign > 0 and abs(logabsdet) > 0.1
    assert_close(ld, np.full(x.shape[0], positions * logabsdet), "same_math")
    assert_close(z, np.asarray(x) @ dense.T, "same_math")
    x_back, ld_g = jaxflow.g_and_log_det(flow, params, z)
    assert_close(x_back, np.asarray(z) @ np.linalg.inv(dense).T, "round_trip")
    assert_close(ld_g, np.full(x.shape[0], -positions * logabsdet), "same_math")


def _assert_standardised(rows, dtype):
    rows = np.asarray(rows).reshape(-1, np.shape(rows)[-1])
    assert_close(rows.mean(0), np.zeros(rows.shape[-1]), "standardised", dtype)
    assert_close(rows.var(0), np.ones(rows.shape[-1]), "standardised", dtype)


def _data(dtype, shape=(64, 4)):
    """A skewed, correlated, shifted batch: far from standardised."""
    raw = jax.random.normal(jax.random.key(21), shape, dtype)
    return 3.0 + jnp.exp(raw) @ jnp.asarray(np.triu(np.ones((shape[-1], shape[-1]))), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_actnorm_data_init_standardises_the_init_batch_wherever_it_sits(dtype):
    data = _data(dtype)
    alone = jaxflow.Flow(event_shape=(4,), layers=ActNorm())
    _assert_standardised(jaxflow.f(alone, jaxflow.init(alone, jax.random.key(0), dtype, data=data), data)[0], dtype)

    # after a random Permute and a fixed Affine: ActNorm sees their output, not the raw data
    chain = jaxflow.Flow(event_shape=(4,), layers=Chain(Permute("random", seed=5), Affine(1.0, 2.0), ActNorm()))
    _assert_standardised(jaxflow.f(chain, jaxflow.init(chain, jax.random.key(0), dtype, data=data), data)[0], dtype)

    # after a (randomly initialised) conditional coupling: the second ActNorm sees the coupling's output
    chain = jaxflow.Flow(event_shape=(4,), layers=Chain(ActNorm(), coupling("alternate", "exp"), ActNorm()),
                         context_dim=2)
    context = jax.random.normal(jax.random.key(2), (64, 2), dtype)
    params = jaxflow.init(chain, jax.random.key(0), dtype, data=data, context=context)
    first = jaxflow.Flow(event_shape=(4,), layers=Chain(ActNorm()))
    _assert_standardised(jaxflow.f(first, params[:1], data)[0], dtype)
    _assert_standardised(jaxflow.f(chain, params, data, context=context)[0], dtype)
    assert float(jnp.max(jnp.abs(params[2]["shift"]))) > 1e-3  # the coupling did move the data


def test_actnorm_data_init_inside_a_repeat_sees_the_previous_copies_output(dtype=jnp.float64):
    data = _data(dtype)
    step = Chain(coupling("alternate", "exp"), ActNorm(), Permute("reverse"))
    flow = jaxflow.Flow(event_shape=(4,), layers=Repeat(step, 3))
    params = jaxflow.init(flow, jax.random.key(1), dtype, data=data)
    h = data
    for k in range(3):  # each copy by hand: its ActNorm's output is standardised
        copy = jax.tree.map(lambda leaf: leaf[k], params)
        h = step.layers[0].forward(copy[0], h, None, (4,))[0]
        h = step.layers[1].forward(copy[1], h, None, (4,))[0]
        _assert_standardised(h, dtype)
        assert float(jnp.max(jnp.abs(copy[1]["log_scale"]))) > 1e-3  # each copy needed its own scaling
        h = step.layers[2].forward(copy[2], h, None, (4,))[0]


def test_permute_jacobian_is_the_permutation_matrix():
    for layer in (Permute("reverse"), Permute("random", seed=0), Permute("random", seed=7)):
        flow = jaxflow.Flow(event_shape=(6,), layers=layer)
        x = jax.random.normal(jax.random.key(0), (6,), jnp.float64)
        jacobian = np.asarray(jax.jacfwd(lambda v: jaxflow.f(flow, {}, v)[0])(x))
        assert set(np.unique(jacobian)) <= {0.0, 1.0}
        np.testing.assert_array_equal(jacobian.sum(0), np.ones(6))
        np.testing.assert_array_equal(jacobian.sum(1), np.ones(6))
        np.testing.assert_array_equal(jacobian, np.eye(6)[layer.permutation((6,))])  # z_j = x_perm[j]
        assert not np.array_equal(jacobian, np.eye(6))
    reverse = Permute("reverse").permutation((6,))
    np.testing.assert_array_equal(reverse, np.arange(6)[::-1])


def test_random_permutations_are_fixed_by_the_seed():
    same = [Permute("random", seed=4).permutation((8,)) for _ in range(2)]
    np.testing.assert_array_equal(same[0], same[1])
    assert Permute("random", seed=4) == Permute("random", seed=4)
    assert hash(Permute("random", seed=4)) == hash(Permute("random", seed=4))
    assert not np.array_equal(Permute("random", seed=4).permutation((8,)), Permute("random", seed=5).permutation((8,)))
    np.testing.assert_array_equal(np.sort(same[0]), np.arange(8))


# ---------------------------------------------------------------- masks

def _conditioner_by_hand(params, h):
    """SMALL's MLP written out: Dense, leaky_relu, Dense, leaky_relu, Dense."""
    for name in ("input", "hidden_0"):
        h = jax.nn.leaky_relu(h @ params[name]["kernel"] + params[name]["bias"], 0.01)
    return h @ params["dims"]["kernel"] + params["dims"]["bias"]


def test_half_mask_is_the_article_equation():
    """z = concat(x1, x2 * exp(s) + t), (t, s) = theta(x1), x2 = x[:d], x1 = x[d:], d = D // 2."""
    for dim in (5, 4):
        flow = jaxflow.Flow(event_shape=(dim,), layers=coupling("half", "exp"))
        params, x, _ = draw(flow, jnp.float64, seed=dim)
        d = dim // 2
        x2, x1 = x[:, :d], x[:, d:]
        t, s = jnp.split(_conditioner_by_hand(params["conditioner"], x1), 2, axis=-1)
        z, ld = jaxflow.f(flow, params, x)
        assert_close(z, jnp.concatenate([x1, x2 * jnp.exp(s) + t], -1), "same_math")
        assert_close(ld, s.sum(-1), "same_math")


@pytest.mark.parametrize("mask, transformed", [
    ("alternate", [0, 2, 4]),
    ((False, True, True, False, True), [1, 2, 4]),
    ((True, False, False, False, False), [0]),
])
def test_alternate_and_explicit_masks_transform_exactly_the_masked_coordinates(mask, transformed):
    """z_T = x_T * exp(s) + t with (t, s) = theta(concat(x_C, c)); the others pass through in place."""
    flow = jaxflow.Flow(event_shape=(5,), layers=coupling(mask, "exp"), context_dim=2)
    params, x, context = draw(flow, jnp.float64, seed=8)
    kept = [j for j in range(5) if j not in transformed]
    z, ld = jaxflow.f(flow, params, x, context=context)
    np.testing.assert_array_equal(np.asarray(z[:, kept]), np.asarray(x[:, kept]))  # by value
    assert bool(jnp.all(z[:, transformed] != x[:, transformed]))
    t, s = jnp.split(_conditioner_by_hand(params["conditioner"], jnp.concatenate([x[:, kept], context], -1)), 2, -1)
    assert_close(z[:, transformed], x[:, transformed] * jnp.exp(s) + t, "same_math")
    assert_close(ld, s.sum(-1), "same_math")
    x_back = jaxflow.g(flow, params, z, context=context)
    np.testing.assert_array_equal(np.asarray(x_back[:, kept]), np.asarray(x[:, kept]))
    assert_close(x_back, x, "round_trip")


@pytest.mark.parametrize("mask, message", [
    ((True, False, True), "mask has 3 entries, the event has 4 coordinates"),
    ((True,) * 4, "got all coordinates transformed"),
    ((False,) * 4, "got no coordinates transformed"),
    ("checkerboard", r"mask must be one of \('half', 'alternate'\) or a tuple of bools, got 'checkerboard'"),
])
def test_bad_masks_raise_one_line_value_errors(mask, message):
    with pytest.raises(ValueError, match=message) as error:
        jaxflow.Flow(event_shape=(4,), layers=Chain(ActNorm(), coupling(mask)))
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------- Repeat

STEP = Chain(ActNorm(), coupling("alternate", "tanh"), LULinear(), Permute("random", seed=1))


def test_repeat_program_size_does_not_grow_with_n():
    def size(n, unroll=1):
        flow = jaxflow.Flow(event_shape=(4,), layers=Repeat(STEP, n, unroll=unroll))
        params = jax.eval_shape(lambda: jaxflow.init(flow, jax.random.key(0)))
        x = jax.ShapeDtypeStruct((3, 4), jnp.float32)
        return len(jax.jit(jaxflow.log_prob, static_argnums=0).lower(flow, params, x).as_text().splitlines())

    assert size(2) == size(64)
    assert size(8, unroll=True) > size(2, unroll=True)  # the measure does see unrolled growth


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_repeat_equals_the_chain_of_its_copies_with_sliced_params(dtype):
    n = 3
    repeated = jaxflow.Flow(event_shape=(4,), layers=Repeat(STEP, n), context_dim=0)
    chained = jaxflow.Flow(event_shape=(4,), layers=Chain(*[repeated.layers.copy(k) for k in range(n)]))
    assert len({repr(layer) for layer in chained.layers.layers}) == n  # STEP's random Permute differs per copy
    params, x, _ = draw(repeated, dtype, seed=12)
    sliced = [jax.tree.map(lambda leaf: leaf[k], params) for k in range(n)]
    for fn in (jaxflow.f, jaxflow.g_and_log_det):
        for got, want in zip(fn(repeated, params, x), fn(chained, sliced, x)):
            assert_close(got, want, "same_math")


# ---------------------------------------------------------------- context

def test_context_misuse_raises_one_line_value_errors_naming_both_shapes():
    flow, params, x, context = setup("chain_of_every_kind", jnp.float64)
    cases = [
        (lambda: jaxflow.log_prob(flow, params, x), r"expected a context of shape \(\.\.\., 2\), got None"),
        (lambda: jaxflow.f(flow, params, x, context=jnp.ones((6, 3))), r"shape \(\.\.\., 2\), got shape \(6, 3\)"),
        (lambda: jaxflow.sample(flow, params, jax.random.key(0), 2, context=jnp.ones(1)),
         r"shape \(\.\.\., 2\), got shape \(1,\)"),
        (lambda: jaxflow.g(flow, params, x, context=jnp.ones((4, 2))),
         r"batch shape \(6,\) and context batch shape \(4,\)"),
        (lambda: jaxflow.as_distribution(flow, params), r"expected a context of shape \(\.\.\., 2\), got None"),
    ]
    unconditional, u_params, u_x, _ = setup("repeat_of_chain", jnp.float64)
    cases.append((lambda: jaxflow.log_prob(unconditional, u_params, u_x, context=jnp.ones((6, 2))),
                  r"unconditional \(context_dim=0\), got a context of shape \(6, 2\)"))
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            call()
        assert "\n" not in str(error.value)


def test_context_broadcasting_equals_explicit_per_row_evaluation():
    flow, params, x, context = setup("chain_of_every_kind", jnp.float64)
    one = lambda v, c: jaxflow.log_prob(flow, params, v, context=c)  # one event, one context
    # x (B, D) with c (C,): every row sees the same context
    assert_close(one(x, context[0]), jnp.stack([one(x[i], context[0]) for i in range(6)]), "same_math")
    # x (D,) with c (B, C): one event under every context
    assert_close(one(x[0], context), jnp.stack([one(x[0], context[i]) for i in range(6)]), "same_math")
    # x (A, B, D) with c (B, C): context b for column b of every row a
    grid = x[:4].reshape(2, 2, 5)
    by_row = jnp.stack([jnp.stack([one(grid[a, b], context[b]) for b in range(2)]) for a in range(2)])
    assert_close(one(grid, context[:2]), by_row, "same_math")
    # samples: c (C,) -> (n, D); c (B, C) -> (n, B, D), column b drawn under context b
    assert jaxflow.sample(flow, params, jax.random.key(0), 3, context=context[0]).shape == (3, 5)
    draws = jaxflow.sample(flow, params, jax.random.key(0), 3, context=context[:4])
    assert draws.shape == (3, 4, 5)
    latent = jax.random.normal(jax.random.key(0), (3, 4, 5), jnp.float64)
    assert_close(draws, jaxflow.g(flow, params, latent, context=context[:4]), "same_math")


def test_gradient_in_the_context_matches_finite_differences():
    flow, params, x, context = setup("chain_of_every_kind", jnp.float64)
    loss = lambda c: jnp.sum(jaxflow.log_prob(flow, params, x, context=c)) + jnp.sum(
        jaxflow.sample(flow, params, jax.random.key(3), 2, context=c) ** 2)
    direction = jax.random.normal(jax.random.key(5), context.shape, jnp.float64)
    step = 1e-6
    numeric = (loss(context + step * direction) - loss(context - step * direction)) / (2 * step)
    gradient = jax.grad(loss)(context)
    assert float(jnp.max(jnp.abs(gradient))) > 1e-3
    assert_close(jnp.vdot(gradient, direction), numeric, "finite_difference")


def test_jit_and_vmap_over_params_and_context():
    flow, params, x, context = setup("chain_of_every_kind", jnp.float64)
    expected = jaxflow.log_prob(flow, params, x, context=context)
    jitted = jax.jit(lambda p, v, c: jaxflow.log_prob(flow, p, v, context=c))
    assert_close(jitted(params, x, context), expected, "same_math")
    # vmap over (event, context) rows
    assert_close(jax.vmap(lambda v, c: jaxflow.log_prob(flow, params, v, context=c))(x, context), expected,
                 "same_math")
    # vmap over contexts only: every event under each context
    per_context = jax.vmap(lambda c: jaxflow.log_prob(flow, params, x, context=c))(context[:3])
    assert_close(per_context[1], jaxflow.log_prob(flow, params, x, context=context[1]), "same_math")
    # vmap over an ensemble of parameters, jitted
    ensemble = jax.tree.map(lambda a, b: jnp.stack([a, b]), params, perturb(params, 9))
    members = jax.jit(jax.vmap(lambda p: jaxflow.log_prob(flow, p, x, context=context)))(ensemble)
    assert_close(members[0], expected, "same_math")
    assert_close(members[1], jaxflow.log_prob(flow, perturb(params, 9), x, context=context), "same_math")
    assert float(jnp.max(jnp.abs(members[1] - members[0]))) > 1e-3


# ---------------------------------------------------------------- reduced precision, NaN, steps, distrax

def test_bfloat16_conditioner_in_a_composed_flow_keeps_float32_and_stays_close():
    full, params, x, context = setup("chain_of_every_kind", jnp.float32)
    low = jaxflow.Flow(event_shape=(5,), context_dim=2,
                       layers=every_kind(jaxflow.MLP(hidden_dim=8, num_hidden=1, compute_dtype="bfloat16")))
    z, ld = jaxflow.f(low, params, x, context=context)
    assert z.dtype == ld.dtype == jnp.float32
    assert jaxflow.g(low, params, z, context=context).dtype == jnp.float32
    assert_close(jaxflow.log_prob(low, params, x, context=context), jaxflow.log_prob(full, params, x, context=context),
                 "layer_stack_bfloat16_vs_float32")
    assert_close(ld, jaxflow.log_det(full, params, x, context=context), "layer_stack_bfloat16_vs_float32")
    assert_close(jaxflow.g(low, params, z, context=context), x, "layer_stack_round_trip")  # still its own inverse


def test_a_nan_row_does_not_change_the_other_rows_of_a_flow_with_every_kind():
    flow, params, x, context = setup("chain_of_every_kind", jnp.float64)
    poisoned = x.at[2, 3].set(jnp.nan)
    rest = np.r_[0:2, 3:6]
    for fn in (jaxflow.log_prob, jaxflow.g):
        clean, dirty = fn(flow, params, x, context=context), fn(flow, params, poisoned, context=context)
        assert bool(jnp.all(jnp.isnan(dirty[2])))
        np.testing.assert_array_equal(np.asarray(dirty[rest]), np.asarray(clean[rest]))
    dirty_context = jaxflow.log_prob(flow, params, x, context=context.at[4, 0].set(jnp.nan))
    np.testing.assert_array_equal(np.asarray(dirty_context[:4]), np.asarray(jaxflow.log_prob(
        flow, params, x, context=context)[:4]))
    grads = jax.grad(lambda v: jaxflow.log_prob(flow, params, v, context=context).sum())(poisoned)
    assert bool(jnp.all(jnp.isfinite(grads[rest])))


def test_g_steps_of_a_chain_are_per_element_and_of_a_repeat_per_copy():
    """steps[k] is the inverse of the k-th element from the top applied to steps[k - 1], through
    the layer protocol directly (one Repeat inside the Chain is one step; in a Repeat, one copy)."""
    flow, params, x, context = setup("chain_of_every_kind", jnp.float64)
    z, _ = jaxflow.f(flow, params, x, context=context)
    layers = flow.layers.layers
    steps = jaxflow.g_steps(flow, params, z, context=context)
    assert steps.shape == (len(layers) + 1, 6, 5)
    by_layer = jax.jit(lambda p, s: jnp.stack([layer.inverse(p[-k], s[k - 1], context, (5,))[0]
                                                for k, layer in enumerate(reversed(layers), start=1)]))
    assert_close(steps[0], z, "same_math")
    assert_close(steps[1:], by_layer(params, steps), "same_math")
    assert_close(steps[-1], x, "layer_stack_round_trip")

    flow, params, x, _ = setup("repeat_of_chain", jnp.float64)
    repeat = flow.layers
    steps = jaxflow.g_steps(flow, params, x)
    assert steps.shape == (repeat.n + 1, 6, 4)
    copy = lambda k: jax.tree.map(lambda leaf: leaf[repeat.n - k], params)
    by_copy = jax.jit(lambda s: jnp.stack([repeat.layer.inverse(copy(k), s[k - 1], None, (4,))[0]
                                           for k in range(1, repeat.n + 1)]))
    assert_close(steps[0], x, "same_math")
    assert_close(steps[1:], by_copy(steps), "same_math")
    assert_close(steps[-1], jaxflow.g(flow, params, x), "same_math")


def test_distrax_adapter_with_a_context_agrees_with_jaxflow():
    flow, params, x, context = setup("chain_of_every_kind", jnp.float64)
    key = jax.random.key(6)
    for c in (context[1], context):  # one context, and one per row
        dist = jaxflow.as_distribution(flow, params, context=c)
        assert_close(dist.log_prob(x), jaxflow.log_prob(flow, params, x, context=c), "same_math")
        bijector = jaxflow.as_bijector(flow, params, context=c)
        y, ld = bijector.forward_and_log_det(x)
        assert_close(y, jaxflow.g(flow, params, x, context=c), "same_math")
        assert_close(ld, -jaxflow.log_det(flow, params, y, context=c), "layer_stack_log_det_cancel")
        assert_close(bijector.inverse(y), x, "layer_stack_round_trip")
    dist = jaxflow.as_distribution(flow, params, context=context[1])
    assert_close(dist.sample(seed=key, sample_shape=5), jaxflow.sample(flow, params, key, 5, context=context[1]),
                 "same_math")
    samples, lp = dist.sample_and_log_prob(seed=key, sample_shape=5)
    assert_close(lp, jaxflow.log_prob(flow, params, samples, context=context[1]), "layer_stack_round_trip")
