"""Eight schools (centred, the hard parameterisation): flow guides against NumPyro's autoguides,
scored against the exact evidence and posterior of log tau.

    nice python examples/vi_eight_schools.py                  # seed 0; a few minutes on 2 busy cores
    nice python examples/vi_eight_schools.py --seeds 0 1 2 --out vi_eight_schools.json

The model (Rubin 1981; Gelman et al., BDA 5.5)::

    mu ~ N(0, 5^2),  tau ~ HalfCauchy(5),  theta_j ~ N(mu, tau^2),  y_j ~ N(theta_j, sigma_j^2),  j = 1..8.

Its 10 latents live, unconstrained, as ``(mu, log tau, theta)``; the posterior is a funnel in
``(log tau, theta)``. Integrating ``theta`` and ``mu`` out in closed form
(``y ~ N(0, 25 * 11^T + diag(tau^2 + sigma^2))``) leaves a 1-D integral over ``tau``, done on a
grid in ``log tau``: the exact log evidence ``log p(y)`` and ``E[log tau | y]``, ``sd[log tau | y]``.

Every guide is fitted by SVI at one budget (``vi_common.py``) and scored on ``--samples`` draws:
ELBO (<= log p(y)), importance-weighted log p(y) with its standard error and ESS, and the guide's
own mean and sd of ``log tau`` (a guide that misses the funnel's neck puts it too high and too narrow).
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # vi_common, from any working directory
from vi_common import GUIDES, budget_parser, fit_guide, parse_checked, result_dict, row, score_guide, unconstrained_log_density, write_results  # noqa: E402

from jaxflow import train  # noqa: E402

Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools():
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", len(Y)):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("y", dist.Normal(theta, jnp.asarray(SIGMA)), obs=jnp.asarray(Y))


def exact(points: int = 20_001) -> dict:
    """``log p(y)`` and the posterior mean and sd of ``log tau``, by the trapezoid rule in ``s = log tau``."""
    s, h = np.linspace(-20.0, 12.0, points, retstep=True)
    tau = np.exp(s)
    log_prior = np.log(2 / (np.pi * 5.0)) - np.log1p((tau / 5.0) ** 2) + s  # HalfCauchy(5) density times d tau / d s
    log_lik = np.array([multivariate_normal.logpdf(Y, np.zeros(len(Y)), 25.0 + np.diag(t**2 + SIGMA**2)) for t in tau])
    log_terms = log_prior + log_lik + np.log(np.r_[0.5, np.ones(points - 2), 0.5] * h)
    log_z = logsumexp(log_terms)
    weights = np.exp(log_terms - log_z)
    mean = float((weights * s).sum())
    sd = float(np.sqrt((weights * (s - mean) ** 2).sum()))
    return {"log_z": float(log_z), "log_tau_mean": mean, "log_tau_sd": sd}


def main():
    args = parse_checked(budget_parser(__doc__.splitlines()[0], list(GUIDES)))

    truth = exact()
    print(f"jax {jax.__version__}, numpyro {numpyro.__version__}, {jax.devices()[0].platform}; {args.steps} steps of "
          f"{args.batch_size} draws, lr {args.lr}, scored on {args.samples} draws, seeds {args.seeds}")
    print(f"exact: log p(y) = {truth['log_z']:.4f}, log tau = {truth['log_tau_mean']:.3f} +- {truth['log_tau_sd']:.3f}")
    results = {"exact": truth, "methods": {}}
    for method in args.methods:
        runs = []
        for seed in args.seeds:
            config = train.TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=seed)
            guide, params, _, seconds = fit_guide(eight_schools, GUIDES[method], config)
            run = result_dict(score_guide(guide, params, unconstrained_log_density(eight_schools, guide),
                                          args.samples, seed), seconds)
            log_tau = np.log(np.asarray(guide.sample_posterior(jax.random.PRNGKey(seed), params,
                                                               sample_shape=(args.samples,))["tau"]))
            run.update(log_tau_mean=float(log_tau.mean()), log_tau_sd=float(log_tau.std()))
            runs.append(run)
        results["methods"][method] = runs
        print(f"{row(method, runs)}   log tau {np.mean([r['log_tau_mean'] for r in runs]):6.3f} +- "
              f"{np.mean([r['log_tau_sd'] for r in runs]):.3f}", flush=True)
    write_results(args, results)


if __name__ == "__main__":
    main()
