"""The masked autoregressive layer (MAF; its inverse, IAF, is :class:`~jaxflow.Invert` of it).

On vector events ``x, z (..., D)`` with a context ``c`` (absent for an unconditional flow), a
:class:`~jaxflow.MADE` conditioner ``theta`` with autoregressive ``order`` and an elementwise
transform ``tau`` with ``P`` numbers per coordinate (:mod:`jaxflow.layers.transforms`), forward
``f`` (data -> latent, the density direction) is one pass of the network:

.. math::

    \\phi = \\theta(\\operatorname{concat}(x, c)), \\qquad z_j = \\tau(x_j; \\phi_j), \\qquad
    \\log\\left|\\det \\frac{\\partial z}{\\partial x}\\right| = \\sum_{j=1}^{D} \\log|\\tau'(x_j; \\phi_j)|,

where :math:`\\phi_j` depends only on the coordinates :math:`x_i` before ``j`` in the order
(``order[i] < order[j]``) and on ``c``: the Jacobian is triangular in that order, so its log-det is
the sum of the diagonal's. The inverse ``g`` solves for ``x`` one position of the order at a
time: starting from :math:`x^{(0)} = 0`,

.. math::

    x^{(k+1)} = \\tau^{-1}\\big(z; \\theta(\\operatorname{concat}(x^{(k)}, c))\\big), \\qquad k = 0 .. D-1,

after step ``k + 1`` the coordinates at positions ``0 .. k`` are exact (each sees only earlier,
already exact ones), so :math:`x^{(D)} = g(z)` exactly, and the last step's numbers are those of
``x`` itself: :math:`\\log|\\det \\partial x / \\partial z| = \\sum_j \\log|(\\tau^{-1})'(z_j; \\phi_j)|`.
The ``D`` steps run as one ``lax.fori_loop`` (a scan: the traced program does not grow with
``D``, and it is differentiable). ``theta`` emits ``P D`` numbers read blocked by number, as a
coupling's: output ``p D + j`` is number ``p`` of coordinate ``j``.

Log-dets ``(...)``; parameters ``{"conditioner": <MADE's params>}`` (``input`` kernel
``(D + C, H)``, ``dims`` kernel ``(H, P D)``).

References:
  Papamakarios, Pavlakou, Murray. Masked Autoregressive Flow for Density Estimation. NeurIPS 2017.
  Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling. Improved Variational Inference with
  Inverse Autoregressive Flow. NeurIPS 2016.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxflow.core.layer import Layer
from jaxflow.layers.coupling import conditioner_numbers, with_context
from jaxflow.layers.transforms import AffineTransform, Transform
from jaxflow.nets.made import MADE

__all__ = ["MaskedAutoregressive"]


@dataclasses.dataclass(frozen=True)
class MaskedAutoregressive(Layer):
    """A masked autoregressive layer on vector events ``(D,)`` (module docstring).

    Args:
      transform: :class:`~jaxflow.AffineTransform` (``P = 2``, the MAF paper's
        :math:`z_j = x_j e^{h(s_j)} + t_j`) or :class:`~jaxflow.RQSpline` (``P = 3K - 1``, the
        autoregressive neural spline flow).
      conditioner: a :class:`~jaxflow.MADE`, mapping ``D + context_dim`` inputs to ``P D`` numbers;
        its ``order`` is the layer's autoregressive order.
      identity_init: zero the MADE's last layer, so every number is 0 at initialisation: the
        identity (for the ``"exp"`` and ``"tanh"`` scales and the spline).
    """

    transform: Transform = AffineTransform()
    conditioner: MADE = MADE()
    identity_init: bool = True

    def __post_init__(self):
        if not isinstance(self.transform, Transform):
            raise TypeError(f"MaskedAutoregressive: transform must be a jaxflow.AffineTransform or jaxflow.RQSpline, "
                            f"got {self.transform!r}")
        if not isinstance(self.conditioner, MADE):
            raise TypeError(f"MaskedAutoregressive: conditioner must be a jaxflow.MADE, got {self.conditioner!r}")
        if not isinstance(self.identity_init, bool):
            raise TypeError(f"MaskedAutoregressive: identity_init must be a bool, got {self.identity_init!r}")

    def check(self, event_shape, context_dim):
        if len(event_shape) != 1:
            raise ValueError(f"MaskedAutoregressive: acts on vector events (D,), got event shape {tuple(event_shape)}")
        self.conditioner.check_dim(event_shape[0])

    def untransformed(self, coords, event_shape):
        """Every coordinate is transformed, and all but the first of the order conditioned on others;
        the first one's numbers depend on nothing but the context, so for the coverage analysis it is
        elementwise (as :class:`~jaxflow.ActNorm`) and keeps its place. Reversing the order between
        layers covers it."""
        out = np.full_like(coords, -1)
        first = self.conditioner.positions(event_shape[0]).index(0)
        out[first] = coords[first]
        return out

    def sizes(self, event_shape, context_dim) -> tuple[int, int]:
        """The conditioner's input and output sizes: ``(D + context_dim, P D)``."""
        return event_shape[0] + context_dim, self.transform.num_params * event_shape[0]

    def init(self, key, event_shape, context_dim, dtype, data=None, context=None):
        in_dim, out_dim = self.sizes(event_shape, context_dim)
        return {"conditioner": self.conditioner.init(key, in_dim, out_dim, dtype, zero_last=self.identity_init)}

    def _numbers(self, params, x, context):
        """``phi (..., D, P)`` from ``theta(concat(x, c))``."""
        dim = x.shape[-1]
        return conditioner_numbers(self.conditioner, params, with_context(x, context), self.transform, dim, dim=dim)

    def forward(self, params, x, context, event_shape):
        z, log_det = self.transform.forward(x, self._numbers(params, x, context))
        return z, log_det.sum(-1)

    def inverse(self, params, z, context, event_shape):
        def step(_, carry):
            return self.transform.inverse(z, self._numbers(params, carry[0], context))

        x, log_det = jax.lax.fori_loop(0, event_shape[0], step, (jnp.zeros_like(z), jnp.zeros_like(z)))
        return x, log_det.sum(-1)
