"""torchref: the article's affine-coupling normalizing flow in PyTorch, defects fixed.

The reference implementation that ``parity_tests/`` compares jaxflow with. It keeps the
article's names, constructor signatures, methods and attribute names
(``NormalizingFlow(latent, flows)``, ``AffineCouplingLayer(theta, split)``,
``Conditioner(in_dim, out_dim, num_hidden, hidden_dim, num_params)``; ``f``, ``g``, ``g_steps``,
``log_prob``, ``sample``, ``latent_log_prob``, ``latent_sample``, ``__len__``), so a
``state_dict`` reads ``flows.0.theta.input.weight``, ``flows.0.theta.hidden.1.bias``, ...

>>> import torch, torchref
>>> model = torchref.build_flow(dim=5, num_flows=4, hidden_dim=32, num_hidden=2, scale="tanh")
>>> flow, params = torchref.to_jax(model)          # jaxflow.RealNVP spec and params pytree
>>> back = torchref.from_jax(flow, params)         # an equal torch model

Deviations from the article
---------------------------
Each is demonstrated on a verbatim copy of the article's code in
``parity_tests/article_code.py`` by ``parity_tests/test_article_defects.py``.

1. ``NormalizingFlow.f`` starts the log-det sum at ``torch.ones`` instead of zeros, so
   ``log_prob`` is too large by exactly 1 nat. Fixed: the sum starts at zeros.
2. The ones it starts from are float32 and accumulated in place, so in float64 the log-det (and
   ``log_prob``) is rounded to float32. Fixed: the sum has the input's dtype and device.
3. ``self.flows`` is a plain list, so the coupling layers' parameters are invisible to
   ``.parameters()``, ``state_dict()``, optimizers and ``.to(device)`` / ``.double()``.
   Fixed: ``nn.ModuleList``.
4. ``g`` splits with the same ``split`` as ``f``; for odd ``dim`` that is not where ``f`` put
   the conditioning half, so ``g`` fails (shape error) instead of inverting ``f``. Fixed:
   :class:`Split` is still the ``split`` callable (``split(x) = (x[..., :d], x[..., d:])``,
   ``d = dim // 2``) and adds ``split.inverse(z) = (z[..., :dim - d], z[..., dim - d:])``,
   which ``AffineCouplingLayer.g`` uses.
5. ``g`` runs under ``torch.no_grad``, so ``g`` and ``sample`` carry no gradient (while
   ``g_steps``, the same computation, does). Fixed: no ``no_grad``; ``g`` is the last of
   ``g_steps``.
6. ``latent`` is a plain ``torch.distributions`` object, which does not move with
   ``.to(device)`` or cast with ``.double()``. Fixed: :class:`StandardNormal` is a module whose
   ``loc`` and ``scale`` are (non-persistent) buffers; the distribution is built on demand.
7. The conditioner reshapes with ``x.size(0)`` and ``f`` sizes its sum with ``x.size(0)``, so
   only inputs with exactly one batch axis work: a single event ``(D,)`` or a batch
   ``(B1, B2, D)`` fails. Fixed: any leading batch shape ``(..., D)``.
8. ``AffineCouplingLayer.f`` is annotated ``-> torch.Tensor`` but returns ``(z, log_det)``.
   Fixed annotation.

Additions, to build every model jaxflow builds: ``AffineCouplingLayer(theta, split, scale="exp",
clamp=5.0, identity_init=False)`` with the scale maps of :data:`torchref.model.LOG_SCALES` (the
article's is ``"exp"``) and :class:`MaskSplit` for in-place masks, ``Conditioner(...,
negative_slope=0.01)``, a twin of every other jaxflow layer kind (:class:`Permutation`,
:class:`LULinear`, :class:`ActNorm`, :class:`Affine`, :class:`Logit`) and of its compositions (:class:`Chain`,
:class:`Repeat`), a context for conditional flows as the second argument of ``f``, ``g``,
``g_steps``, ``log_prob`` and ``sample`` (``model.log_prob(x, context)``, ``model.sample(n,
context)``; broadcast against ``x``'s batch axes; ``NormalizingFlow(..., context_affine,
context_dim)``), :func:`build_flow` (with ``identity_init``), and the conversions :func:`to_jax` /
:func:`from_jax` of any vector ``jaxflow.Flow``:

>>> flow = jaxflow.Flow((3,), jaxflow.Repeat(jaxflow.Chain(jaxflow.ActNorm(), jaxflow.AffineCoupling("alternate"),
...                                                        jaxflow.LULinear()), 4), context_dim=2)
>>> model = torchref.from_spec(flow)                # flows = Repeat([Chain([ActNorm, AffineCouplingLayer, LULinear]), ...])
>>> torchref.to_jax(model)[0] == flow
True

Neural spline flows (``jaxflow.Coupling``, ``jaxflow.NeuralSplineFlow``) have the twin
:class:`Coupling` (``split``, ``Conditioner``, and an :class:`AffineTransform` or :class:`RQSpline`;
:mod:`torchref.spline`), whose rational-quadratic spline is nflows', the NSF authors' code.

Masked autoregressive flows (``jaxflow.MaskedAutoregressive`` with a ``jaxflow.MADE``,
``jaxflow.Invert``, ``jaxflow.MAF``) have the twins :class:`MADE` (the :class:`Conditioner` with
masked weights, its output read blocked), :class:`MaskedAutoregressive` and :class:`Invert`
(:mod:`torchref.autoregressive`).

Image flows (``jaxflow.Flow`` on ``(H, W, C)`` events, ``jaxflow.MultiScaleRealNVP``) have twins
acting on NCHW tensors ``(..., C, H, W)``: :class:`ImageAffineCouplingLayer` with an
:class:`ImageMask` and a ``nn.Conv2d`` :class:`ResNet`, :class:`Squeeze`, :class:`Unsqueeze`,
:class:`FactorOut`, and ``ActNorm`` / ``LULinear`` / ``Affine`` / ``Permutation`` per channel
(``channel_dim=-3``). Data change layout with :func:`to_torch_layout` (``(..., H, W, C) -> (...,
C, H, W)``) and :func:`to_jax_layout`:

>>> flow = jaxflow.MultiScaleRealNVP((8, 8, 1), num_scales=2)
>>> model = torchref.from_spec(flow)
>>> model.log_prob(torch.from_numpy(torchref.to_torch_layout(x_nhwc)))   # == jaxflow.log_prob(flow, params, x_nhwc)
>>> torchref.to_jax(model)[0] == jaxflow.Flow(flow.event_shape, flow.layers, flow.context_dim)
True

.. warning:: The conditioner's output layout differs: torch reads ``dims`` interleaved
   (row ``2j`` is ``t_j``, row ``2j + 1`` is ``s_j``), jaxflow blocked (``[t | s]``).
   :mod:`torchref.convert` permutes the rows; nothing else needs to know. Image conditioners
   are blocked on both sides; there the difference is the layout, NHWC and Flax kernels
   ``(kh, kw, in, out)`` in jaxflow, NCHW and ``Conv2d`` weights ``(out, in, kh, kw)`` here,
   which :mod:`torchref.convert` alone transposes.
"""

from torchref.convert import build_flow, from_jax, from_spec, spec_of, to_jax, to_jax_layout, to_jax_params, to_torch_layout
from torchref.autoregressive import MADE, Invert, MaskedAutoregressive
from torchref.spline import AffineTransform, Coupling, RQSpline
from torchref.model import (
    LOG_SCALES, ActNorm, Affine, AffineCouplingLayer, Chain, Conditioner, FactorOut, ImageAffineCouplingLayer, ImageMask,
    Logit, LULinear, MaskSplit, NormalizingFlow, Permutation, Repeat, ResNet, Split, Squeeze, StandardNormal, Unsqueeze,
)

__all__ = [
    "NormalizingFlow",
    "AffineCouplingLayer",
    "Coupling",
    "AffineTransform",
    "RQSpline",
    "Conditioner",
    "MADE",
    "MaskedAutoregressive",
    "Invert",
    "Split",
    "MaskSplit",
    "ImageAffineCouplingLayer",
    "ImageMask",
    "ResNet",
    "Squeeze",
    "Unsqueeze",
    "FactorOut",
    "Permutation",
    "LULinear",
    "ActNorm",
    "Affine",
    "Logit",
    "Chain",
    "Repeat",
    "StandardNormal",
    "LOG_SCALES",
    "build_flow",
    "from_spec",
    "spec_of",
    "to_jax",
    "to_jax_params",
    "from_jax",
    "to_torch_layout",
    "to_jax_layout",
]
