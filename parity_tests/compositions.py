"""Random compositions of every jaxflow layer kind, and the same flow on both sides with random weights.

:func:`composed_flows` draws a :class:`jaxflow.Flow` on ``R^D`` (``D`` 2-9, even and odd), with or
without a context (and a ``context_affine``), whose root is a ``Chain``, a ``Repeat`` or a
``Chain`` holding a ``Repeat``, of 1-8 leaf layers in all: couplings with ``"half"``,
``"alternate"`` and explicit masks and every scale map, ``Coupling`` with a rational-quadratic
spline (1-8 bins on ``[-B, B]``, ``B`` 1 or 2, so that standard normal data reach the tails) or an
affine transform, ``MaskedAutoregressive`` (a ``MADE`` in natural or random order, either
transform), ``Invert`` of a masked autoregressive layer, a coupling or a permutation (an IAF),
``Permute``, ``ActNorm``, ``LULinear``, ``Affine``. :func:`make_composed_pair`
initialises the torch twin, perturbs every ``ActNorm`` and ``LULinear`` away from the identity (so
that a wrong layout of theirs cannot pass), and converts.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

import jaxflow
import torchref

__all__ = ["composed_flows", "LEAVES", "leaf_layers", "make_composed_pair", "perturb", "COMPOSED_EDGE_CASES"]

MLPS = st.builds(jaxflow.MLP, hidden_dim=st.sampled_from([4, 16]), num_hidden=st.integers(0, 2),
                 negative_slope=st.sampled_from([0.01, 0.2]))
NUMBERS = st.floats(-1.5, 1.5).map(lambda v: round(v, 3))
SCALES = st.floats(0.5, 2.0).map(lambda v: round(v, 3))


def _mask(dim: int):
    explicit = st.lists(st.booleans(), min_size=dim, max_size=dim).filter(lambda m: any(m) and not all(m)).map(tuple)
    return st.one_of(st.sampled_from(["half", "alternate"]), explicit)


def _numbers(values, dim: int):
    return st.one_of(values, st.tuples(*[values] * dim))


def _affine_couplings(dim: int):
    return st.builds(jaxflow.AffineCoupling, mask=_mask(dim), conditioner=MLPS, scale=st.sampled_from(jaxflow.SCALES),
                     clamp=st.sampled_from([2.0, 5.0]))


def _permutations(dim: int):
    return st.builds(jaxflow.Permute, kind=st.just("random"), seed=st.integers(0, 1000)) | st.just(jaxflow.Permute())


#: a coupling's (or autoregressive layer's) elementwise transforms; |x| > bound: the spline's tails
TRANSFORMS = st.one_of(st.builds(jaxflow.RQSpline, bins=st.integers(1, 8), bound=st.sampled_from([1.0, 2.0])),
                       st.builds(jaxflow.AffineTransform, scale=st.sampled_from(jaxflow.SCALES), clamp=st.just(2.0)))


def _masked_autoregressive(dim: int):
    made = st.builds(jaxflow.MADE, hidden_dim=st.sampled_from([4, 16]), num_hidden=st.integers(0, 2),
                     order=st.none() | st.permutations(range(dim)).map(tuple),
                     negative_slope=st.sampled_from([0.01, 0.2]))
    return st.builds(jaxflow.MaskedAutoregressive, transform=TRANSFORMS, conditioner=made, identity_init=st.just(False))


LEAVES = {  # kind -> its random layers on R^dim; a row per leaf kind (tests/test_layer_kinds.py checks it)
    jaxflow.AffineCoupling: _affine_couplings,
    jaxflow.Permute: _permutations,
    jaxflow.ActNorm: lambda dim: st.just(jaxflow.ActNorm()),
    jaxflow.LULinear: lambda dim: st.just(jaxflow.LULinear()),
    jaxflow.Affine: lambda dim: st.builds(jaxflow.Affine, shift=_numbers(NUMBERS, dim), scale=_numbers(SCALES, dim)),
    jaxflow.Coupling: lambda dim: st.builds(  # torch's random conditioner, not the identity
        jaxflow.Coupling, mask=_mask(dim), conditioner=MLPS, identity_init=st.just(False), transform=TRANSFORMS),
    jaxflow.MaskedAutoregressive: _masked_autoregressive,  # MAF layers
    jaxflow.Invert: lambda dim: st.builds(jaxflow.Invert, layer=st.one_of(  # IAF layers, and inverted others
        _masked_autoregressive(dim), _affine_couplings(dim), _permutations(dim))),
}


def leaf_layers(dim: int):
    """Any one leaf layer on ``R^dim``: a draw from one of :data:`LEAVES`."""
    return st.one_of(*(layers(dim) for layers in LEAVES.values()))


def _block(layers):
    return layers[0] if len(layers) == 1 else jaxflow.Chain(*layers)


@st.composite
def composed_flows(draw) -> jaxflow.Flow:
    dim = draw(st.integers(2, 9))
    context_dim = draw(st.sampled_from([0, 1, 3]))
    structure = draw(st.sampled_from(["chain", "repeat", "chain_with_repeat"]))
    if structure == "chain":
        layers = jaxflow.Chain(*draw(st.lists(leaf_layers(dim), min_size=1, max_size=8)))
    elif structure == "repeat":  # n copies of a block of k leaves, n * k <= 8
        n = draw(st.integers(1, 4))
        layers = jaxflow.Repeat(_block(draw(st.lists(leaf_layers(dim), min_size=1, max_size=8 // n))), n)
    else:
        head = draw(st.lists(leaf_layers(dim), min_size=0, max_size=2))
        block = draw(st.lists(leaf_layers(dim), min_size=1, max_size=2))
        tail = draw(st.lists(leaf_layers(dim), min_size=0, max_size=2))
        layers = jaxflow.Chain(*head, jaxflow.Repeat(_block(block), 2), *tail)
    context_affine = None
    if context_dim and draw(st.booleans()):
        context_affine = jaxflow.Affine(draw(_numbers(NUMBERS, context_dim)), draw(_numbers(SCALES, context_dim)))
    return jaxflow.Flow((dim,), layers, context_dim=context_dim, context_affine=context_affine)


def perturb(model: torch.nn.Module, seed: int, size: float = 0.3) -> None:
    """Every ``ActNorm`` and ``LULinear`` parameter (initialised at the identity) to ``size * N(0, 1)``."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torchref.ActNorm, torchref.LULinear)):
                for p in module.parameters():
                    p.copy_(size * torch.randn(p.shape, generator=generator, dtype=torch.float64))


def make_composed_pair(flow: jaxflow.Flow, seed: int, dtype, device: str = "cpu"):
    """``(params, model)`` with the same random weights: torch's init, perturbed, converted to jaxflow."""
    torch.manual_seed(seed)
    model = torchref.from_spec(flow, dtype=getattr(torch, np.dtype(dtype).name))
    perturb(model, seed)
    converted, params = torchref.to_jax(model.to(device))
    assert converted == flow
    return params, model


_MLP = jaxflow.MLP(8, 1)
COMPOSED_EDGE_CASES = [  # always run: every layer kind in one flow, conditional, odd dim, both dtypes
    jaxflow.Flow((5,), jaxflow.Chain(
        jaxflow.Affine((0.1, -0.2, 0.3, 0.0, 1.0), 2.0), jaxflow.ActNorm(),
        jaxflow.Repeat(jaxflow.Chain(jaxflow.AffineCoupling("alternate", _MLP, "tanh"), jaxflow.LULinear(),
                                     jaxflow.Permute("random", 1)), 2),  # not an involution
        jaxflow.AffineCoupling("half", _MLP), jaxflow.AffineCoupling((True, False, False, True, False), _MLP, "sigmoid"),
        jaxflow.Permute(), jaxflow.Coupling("alternate", _MLP, jaxflow.RQSpline(5, 1.0), identity_init=False),
        jaxflow.Coupling("half", _MLP, jaxflow.AffineTransform("tanh", 2.0), identity_init=False)),
        context_dim=2, context_affine=jaxflow.Affine((1.0, 2.0), (3.0, 4.0))),
    jaxflow.Flow((2,), jaxflow.Repeat(jaxflow.Chain(jaxflow.ActNorm(), jaxflow.AffineCoupling("half", jaxflow.MLP(4, 0)),
                                                    jaxflow.LULinear()), 4)),
]
