"""Flows as variational posteriors on 2-D targets with an exact log Z: jaxflow's fit_vi and
AutoFlowGuide beside NumPyro's AutoIAFNormal, AutoBNAFNormal and AutoMultivariateNormal.

    nice python examples/vi_banana.py                          # both targets, seed 0; ~3 min on 2 busy cores
    nice python examples/vi_banana.py --seeds 0 1 2 --out vi_banana.json

Targets (unnormalised), with their normalisers in closed form:

* banana: ``log p~(x) = -x_1^2 / (2 a^2) - (x_2 - b (x_1^2 - a^2))^2 / 2``, ``a = 2``, ``b = 0.5``;
  ``Z = 2 pi a`` (the ``x_2`` integral is ``sqrt(2 pi)`` for every ``x_1``).
* ring: ``log p~(x) = -(|x| - r)^2 / (2 s^2)``, ``r = 3``, ``s = 0.3``; in polar coordinates
  ``Z = 2 pi (s^2 exp(-r^2 / 2 s^2) + r s sqrt(2 pi) Phi(r / s))``.

Every method has the same budget (``--steps`` Adam steps of ``--batch-size`` draws, the optimiser
of :func:`jaxflow.train.optimizer`; see ``vi_common.py``) and is scored on ``--samples`` fresh
draws: the ELBO (<= log Z; the gap is KL(q || p)) and the importance-weighted log Z with its
standard error and effective sample size. Prints one table per target; ``--out`` writes the numbers as JSON.
"""

import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from scipy.stats import norm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # vi_common, from any working directory
from vi_common import (GUIDES, budget_parser, fit_guide, parse_checked, realnvp, result_dict, row, score_guide,  # noqa: E402
                       unconstrained_log_density, write_results)

from jaxflow import train  # noqa: E402

A, B = 2.0, 0.5
R, S = 3.0, 0.3


def banana(x):
    return -x[..., 0] ** 2 / (2 * A**2) - (x[..., 1] - B * (x[..., 0] ** 2 - A**2)) ** 2 / 2


def ring(x):
    return -((jnp.linalg.norm(x, axis=-1) - R) ** 2) / (2 * S**2)


TARGETS = {
    "banana": (banana, math.log(2 * math.pi * A)),
    "ring": (ring, math.log(2 * math.pi * (S**2 * math.exp(-(R**2) / (2 * S**2)) + R * S * math.sqrt(2 * math.pi)
                                           * norm.cdf(R / S)))),
}


def model_of(log_density):
    """A NumPyro model whose only latent ``x`` in R^2 has the density ``exp(log_density)``."""
    def model():
        x = numpyro.sample("x", dist.ImproperUniform(dist.constraints.real_vector, (), (2,)))
        numpyro.factor("target", log_density(x))
    return model


def main():
    parser = budget_parser(__doc__.splitlines()[0], ["jaxflow fit_vi RealNVP", *GUIDES])
    parser.add_argument("--targets", nargs="+", choices=sorted(TARGETS), default=sorted(TARGETS))
    args = parse_checked(parser)

    print(f"jax {jax.__version__}, numpyro {numpyro.__version__}, {jax.devices()[0].platform}; {args.steps} steps of "
          f"{args.batch_size} draws, lr {args.lr}, scored on {args.samples} draws, seeds {args.seeds}")
    results = {}
    for target in args.targets:
        log_density, log_z = TARGETS[target]
        model = model_of(log_density)
        print(f"\n{target}: exact log Z = {log_z:.4f}")
        results[target] = {"log_z": log_z, "methods": {}}
        for method in args.methods:
            runs = []
            for seed in args.seeds:
                config = train.TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=seed,
                                           eval_every=args.steps, patience=0)
                if method == "jaxflow fit_vi RealNVP":  # the same flow as the AutoFlowGuide's, fitted by fit_vi
                    start = time.perf_counter()
                    fitted = train.fit_vi(realnvp(2), log_density, config, num_samples=args.samples, progress=False)
                    runs.append(result_dict(fitted.evidence, time.perf_counter() - start))
                else:
                    guide, params, _, seconds = fit_guide(model, GUIDES[method], config)
                    runs.append(result_dict(score_guide(guide, params, unconstrained_log_density(model, guide),
                                                        args.samples, seed), seconds))
            print(row(method, runs), flush=True)
            results[target]["methods"][method] = runs
    write_results(args, results)


if __name__ == "__main__":
    main()
