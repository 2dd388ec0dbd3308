"""What the variational-inference examples share: NumPyro's autoguides and jaxflow's at one budget.

Every guide is fitted by NumPyro's ``SVI`` with ``Trace_ELBO(num_particles=batch_size)`` and the
optax optimiser :func:`jaxflow.train.optimizer` of the same :class:`~jaxflow.train.TrainConfig`
(clipping, Adam, cosine decay), so jaxflow's :class:`~jaxflow.interop.numpyro.AutoFlowGuide`,
``AutoIAFNormal``, ``AutoBNAFNormal`` and ``AutoMultivariateNormal`` see the same steps, draws
and learning rates. Each is then scored on fresh draws in the model's unconstrained space by
:func:`jaxflow.vi.evidence` (ELBO, importance-weighted log Z, its standard error, ESS).

Imported by the scripts beside it (``python examples/vi_*.py`` puts this folder on ``sys.path``).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np
import numpyro.distributions as dist
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoBNAFNormal, AutoIAFNormal, AutoMultivariateNormal
from numpyro.infer.util import initialize_model

import jaxflow as jf
from jaxflow import train
from jaxflow.interop.numpyro import AutoFlowGuide
from jaxflow.vi import evidence



def realnvp(dim: int) -> jf.RealNVP:
    """The RealNVP of the jaxflow guide (and of ``fit_vi`` in ``vi_banana.py``): the identity at init, ``N(0, I)``."""
    return jf.RealNVP(dim=dim, num_flows=8, hidden_dim=32, num_hidden=2, scale="tanh", identity_init=True)


# NumPyro's defaults, except AutoIAFNormal with 4 flows (3 by default)
GUIDES = {
    "jaxflow RealNVP": lambda model: AutoFlowGuide(model, flow=realnvp),
    "jaxflow NSF": lambda model: AutoFlowGuide(model, flow=lambda d: jf.NeuralSplineFlow(
        dim=d, num_layers=4, bound=5.0, hidden_dim=32, num_hidden=2)),
    "numpyro AutoIAFNormal": lambda model: AutoIAFNormal(model, num_flows=4),
    "numpyro AutoBNAFNormal": lambda model: AutoBNAFNormal(model),
    "numpyro AutoMultivariateNormal": lambda model: AutoMultivariateNormal(model),
}


def fit_guide(model, make_guide, config: train.TrainConfig, *model_args):
    """``(guide, params, losses, seconds)`` after ``config.steps`` SVI steps (seed ``config.seed``)."""
    guide = make_guide(model)
    svi = SVI(model, guide, train.optimizer(config), Trace_ELBO(num_particles=config.batch_size))
    start = time.perf_counter()
    result = svi.run(jax.random.PRNGKey(config.seed), config.steps, *model_args, progress_bar=False)
    jax.block_until_ready(result.params)
    return guide, result.params, np.asarray(result.losses), time.perf_counter() - start


def unconstrained_log_density(model, guide, *model_args):
    """``log p~(u)`` of the model's flattened unconstrained latent vector ``u`` (batched over leading
    axes), packed as the fitted ``AutoContinuous`` ``guide`` packs it: ``-potential_energy``, which
    includes the log-Jacobians of ``biject_to``."""
    potential = initialize_model(jax.random.PRNGKey(0), model, model_args=model_args).potential_fn

    def log_density(u):
        flat = u.reshape(-1, u.shape[-1])
        return -jax.vmap(lambda v: potential(guide._unpack_latent(v)))(flat).reshape(u.shape[:-1])

    return log_density


def score_guide(guide, params, log_density, num_samples: int, seed: int):
    """:func:`jaxflow.vi.evidence` of ``num_samples`` fresh draws of the guide's posterior over ``u``."""
    posterior = guide.get_posterior(params)
    key = jax.random.PRNGKey(10_000 + seed)
    if isinstance(posterior, dist.TransformedDistribution):  # flows: log q from the forward pass, no inversion
        u, intermediates = posterior.sample_with_intermediates(key, (num_samples,))
        log_q = posterior.log_prob(u, intermediates)
    else:
        u = posterior.sample(key, (num_samples,))
        log_q = posterior.log_prob(u)
    return evidence(log_density(u) - log_q)


def row(name: str, seeds_results: list[dict]) -> str:
    """One line of a table: the mean (and spread over seeds) of ELBO, IW log Z with its stated
    standard error, ESS fraction and seconds."""
    get = lambda key: np.array([r[key] for r in seeds_results])
    spread = lambda key: f" +- {get(key).std(ddof=1):.3f}" if len(seeds_results) > 1 else ""
    return (f"{name:32s} ELBO {get('elbo').mean():8.3f}{spread('elbo')}   IW log Z {get('log_z').mean():8.3f}"
            f"{spread('log_z')} (se {get('log_z_stderr').mean():.3f})   ESS {100 * get('ess_fraction').mean():5.1f} %"
            f"   {get('seconds').mean():6.1f} s")


def result_dict(estimate, seconds: float) -> dict:
    return {"elbo": estimate.elbo, "elbo_stderr": estimate.elbo_stderr, "log_z": estimate.log_z,
            "log_z_stderr": estimate.log_z_stderr, "ess_fraction": estimate.ess / estimate.num_samples,
            "seconds": seconds}


def write_results(args, results: dict) -> None:
    """``{"args": ..., "results": ...}`` as JSON to ``args.out``, if given."""
    if args.out:
        with open(args.out, "w") as out:
            json.dump({"args": vars(args), "results": results}, out, indent=2)
        print(f"wrote {args.out}")


def budget_parser(description: str, methods: list[str]) -> argparse.ArgumentParser:
    """The examples' shared options: ``--methods`` (of ``methods``, all by default), the one budget
    every method gets (``--steps`` Adam steps of ``--batch-size`` draws at ``--lr``, scored on
    ``--samples`` draws), ``--seeds`` and ``--out``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--methods", nargs="+", choices=methods, default=methods)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64, help="draws per step (default 64)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--samples", type=int, default=20_000, help="draws that score each method (default 20000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", metavar="FILE.json", help="write the numbers here (its folder must exist)")
    return parser


def parse_checked(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """``parser``'s arguments; ``--out`` in a folder that does not exist is a one-line usage error."""
    args = parser.parse_args()
    if args.out and not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        parser.error(f"{args.out}: its folder does not exist")
    return args
