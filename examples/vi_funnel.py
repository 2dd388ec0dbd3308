"""NeuTra HMC on Neal's funnel: NUTS alone, and NUTS in the latent space of a flow fitted by SVI
(jaxflow's AutoFlowGuide beside NumPyro's AutoIAFNormal, AutoBNAFNormal, AutoMultivariateNormal).

    nice python examples/vi_funnel.py                  # seed 0; a few minutes on 2 busy cores
    nice python examples/vi_funnel.py --seeds 0 1 --out vi_funnel.json

The funnel in ``D = 10`` dimensions, ``y ~ N(0, 3^2)``, ``x_i | y ~ N(0, e^y)`` (``i < D``), is
normalised (``log Z = 0``), so a guide's ELBO is ``-KL(q || p)`` and its importance-weighted log Z
should come out at 0. Its neck (``y << 0``) needs step sizes far below its mouth's: plain NUTS
diverges there and under-samples it (``sd(y)`` below 3). NeuTra (``NeuTraReparam``) runs NUTS on
``z`` with ``u = T(z)``, ``T`` the guide's flow, where the posterior is near ``N(0, I)``.

For every method: the guide's SVI fit (``--steps`` steps of ``--batch-size`` draws, the same
optimiser, ``vi_common.py``), its ELBO and IW log Z on ``--samples`` draws, then one NUTS chain
(``--warmup`` + ``--draws``): divergences after warm-up, ``y``'s mean and sd (truth 0 and 3), the
ESS of ``y`` and ``y^2`` (the lesser) and the ESS per second of sampling (a second sampling run
from the warmed-up state, so that compilation is not counted; SVI time is reported apart).
"""

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.diagnostics import effective_sample_size
from numpyro.infer import MCMC, NUTS
from numpyro.infer.reparam import NeuTraReparam

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # vi_common, from any working directory
from vi_common import GUIDES, budget_parser, fit_guide, parse_checked, score_guide, unconstrained_log_density, write_results  # noqa: E402

from jaxflow import train  # noqa: E402

DIM = 10


def funnel():
    y = numpyro.sample("y", dist.Normal(0.0, 3.0))
    numpyro.sample("x", dist.Normal(jnp.zeros(DIM - 1), jnp.exp(y / 2)).to_event(1))


def nuts(model, warmup: int, draws: int, seed: int, to_y):
    """``(divergences, y draws, seconds)`` of one chain: warm-up and a first run (compiles), then the
    timed run from the warmed-up state."""
    mcmc = MCMC(NUTS(model), num_warmup=warmup, num_samples=draws, progress_bar=False)
    mcmc.warmup(jax.random.PRNGKey(seed), extra_fields=("diverging",))
    mcmc.run(jax.random.PRNGKey(seed + 1), extra_fields=("diverging",))  # compiles the sampling loop
    mcmc.post_warmup_state = mcmc.last_state
    start = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(seed + 2), extra_fields=("diverging",))
    seconds = time.perf_counter() - start
    return int(mcmc.get_extra_fields()["diverging"].sum()), np.asarray(to_y(mcmc.get_samples())), seconds


def main():
    parser = budget_parser(__doc__.splitlines()[0], ["NUTS alone", *GUIDES])
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--draws", type=int, default=1000)
    args = parse_checked(parser)

    print(f"jax {jax.__version__}, numpyro {numpyro.__version__}, {jax.devices()[0].platform}; funnel D = {DIM}; SVI "
          f"{args.steps} steps of {args.batch_size} draws, lr {args.lr}; NUTS {args.warmup} + {args.draws}; "
          f"seeds {args.seeds}")
    results = {}
    for method in args.methods:
        runs = []
        for seed in args.seeds:
            run = {}
            if method == "NUTS alone":
                divergences, y, seconds = nuts(funnel, args.warmup, args.draws, seed, lambda s: s["y"])
            else:
                config = train.TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=seed)
                guide, params, _, run["svi_seconds"] = fit_guide(funnel, GUIDES[method], config)
                estimate = score_guide(guide, params, unconstrained_log_density(funnel, guide), args.samples, seed)
                run.update(elbo=estimate.elbo, log_z=estimate.log_z, log_z_stderr=estimate.log_z_stderr,
                           ess_fraction=estimate.ess / estimate.num_samples)
                neutra = NeuTraReparam(guide, params)
                latent = f"{guide.prefix}_shared_latent"
                divergences, y, seconds = nuts(neutra.reparam(funnel), args.warmup, args.draws, seed,
                                               lambda s: neutra.transform_sample(s[latent])["y"])
            ess = float(min(effective_sample_size(power[None, :, None])[0] for power in (y, y**2)))
            run.update(divergences=divergences, y_mean=float(y.mean()), y_sd=float(y.std()), ess=ess,
                       nuts_seconds=seconds, ess_per_second=ess / seconds)
            runs.append(run)
        results[method] = runs
        mean = lambda key: np.mean([r[key] for r in runs])
        vi = (f"ELBO {mean('elbo'):7.3f}  IW log Z {mean('log_z'):6.3f} (se {mean('log_z_stderr'):.3f}, "
              f"ESS {100 * mean('ess_fraction'):5.1f} %)  SVI {mean('svi_seconds'):5.1f} s" if "elbo" in runs[0]
              else " " * 73)
        print(f"{method:31s} {vi} | divergences {mean('divergences'):6.1f}  y {mean('y_mean'):5.2f} +- "
              f"{mean('y_sd'):4.2f}  ESS {mean('ess'):6.0f}  ESS/s {mean('ess_per_second'):7.0f}", flush=True)
    write_results(args, results)


if __name__ == "__main__":
    main()
