"""A conditional posterior q(theta | x) against the exact one: jaxflow's spline and affine flows
beside flowjax's spline coupling flow, on the same simulations, optimiser and budget.

    python examples/spline_posterior.py --steps 2100 --seeds 0 1 2 --out results.json   # ~10 min on 2 CPU cores
    python examples/spline_posterior.py --methods flowjax-affine     # flowjax's affine coupling flow, same setup

The simulator (a banana posterior, as in simulation-based inference)::

    theta ~ N(0, I_2),    x | theta ~ N((theta_1, theta_2 + theta_1^2), sigma^2 I_2),  sigma = 0.3.

The exact posterior is ``log p(theta | x) = log N(theta; 0, I) + log N(x; m(theta), sigma^2 I) - log p(x)``.
Given ``theta_1`` the ``theta_2`` part is a Gaussian product, so the evidence is a 1-D integral

.. math::

    p(x) = \\int N(\\theta_1; 0, 1)\\, N(x_1; \\theta_1, \\sigma^2)\\, N(x_2; \\theta_1^2, 1 + \\sigma^2)\\, d\\theta_1,

computed on a grid (checked against the grid twice as fine, and against a 2-D grid over
``theta`` for a few ``x``). The score of a fitted ``q`` is the mean over held-out joint draws
``(theta_i, x_i)`` of ``log p(theta_i | x_i) - log q(theta_i | x_i)``: an unbiased estimate of
``E_x KL(p(. | x) || q(. | x))`` (nats, >= 0 in expectation), with its standard error.

Every method fits the same 10 000 simulations (9 000 to train, 1 000 to validate and keep the
best parameters, once an epoch), standardised by the training split's mean and standard deviation
(``theta`` and ``x``), with ``jaxflow.train.optimizer`` (global-norm clipping 10, Adam, cosine
decay to 1% of ``--lr``) for the same number of steps of ``--batch-size`` rows. Differences that
the APIs impose: jaxflow draws batches with replacement, flowjax's ``fit_to_data`` runs epochs of
a shuffled split (its own random 10%), dropping the last partial batch; jaxflow's spline flow puts
an ``LULinear`` (4 parameters in 2-D) after each coupling and reversal, flowjax a ``Flip`` alone.
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import logsumexp

import jaxflow as jf
from jaxflow import train

SIGMA = 0.3
#: the theta_1 grid of the evidence integral: the prior N(0, 1) puts < 1e-14 of its mass outside
GRID = (-8.0, 8.0)


def simulate(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` joint draws: ``theta (n, 2)``, ``x (n, 2)``."""
    theta = rng.standard_normal((n, 2))
    x = np.stack([theta[:, 0], theta[:, 1] + theta[:, 0] ** 2], 1) + SIGMA * rng.standard_normal((n, 2))
    return theta, x


def _log_normal(x, mean, var):
    return -0.5 * ((x - mean) ** 2 / var + np.log(2 * np.pi * var))


def log_joint(theta: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``log p(theta) + log p(x | theta)`` for broadcastable ``theta (..., 2)``, ``x (..., 2)``."""
    t1, t2 = theta[..., 0], theta[..., 1]
    return (_log_normal(t1, 0, 1) + _log_normal(t2, 0, 1) + _log_normal(x[..., 0], t1, SIGMA**2)
            + _log_normal(x[..., 1], t2 + t1**2, SIGMA**2))


def log_evidence(x: np.ndarray, points: int = 4001, chunk: int = 2000) -> np.ndarray:
    """``log p(x)`` for ``x (n, 2)`` by the trapezoid rule on ``points`` values of ``theta_1`` in :data:`GRID`
    (the ``theta_2`` integral done exactly)."""
    t1, h = np.linspace(*GRID, points, retstep=True)
    weights = np.log(np.r_[0.5, np.ones(points - 2), 0.5] * h)
    out = []
    for rows in np.array_split(x, max(1, -(-len(x) // chunk))):
        x1, x2 = rows[:, :1], rows[:, 1:]
        terms = _log_normal(t1, 0, 1) + _log_normal(x1, t1, SIGMA**2) + _log_normal(x2, t1**2, 1 + SIGMA**2)
        out.append(logsumexp(terms + weights, axis=1))
    return np.concatenate(out)


def check_evidence(x: np.ndarray) -> dict:
    """The grid's error: ``max |log p(x)|`` change when the grid doubles (all ``x``), and the 1-D
    evidence against a 2-D grid over ``theta`` (``x[:5]``)."""
    doubling = float(np.max(np.abs(log_evidence(x, 8001) - log_evidence(x))))
    t1, h1 = np.linspace(*GRID, 1601, retstep=True)
    t2, h2 = np.linspace(-8.0, 8.0, 1601, retstep=True)
    theta = np.stack(np.meshgrid(t1, t2, indexing="ij"), -1)
    two_d = [logsumexp(log_joint(theta, xi)) + np.log(h1 * h2) for xi in x[:5]]
    return {"grid_doubling_max_abs": doubling,
            "vs_2d_grid_max_abs": float(np.max(np.abs(np.array(two_d) - log_evidence(x[:5]))))}


def _clocks() -> np.ndarray:
    """(wall, CPU of this process's threads) seconds: on a shared machine the CPU time is the steadier."""
    return np.array([time.perf_counter(), time.process_time()])


def fit_jaxflow(model, data, config):
    """(log q on the test set, [wall, CPU] seconds of the fit) for a jaxflow flow, standardised and
    fitted with ``train.fit``."""
    (th_tr, x_tr), (th_val, x_val), (th_te, x_te) = data
    flow = train.standardize(model, th_tr, x_tr)
    start = _clocks()
    result = train.fit(flow, th_tr, th_val, config, context_train=x_tr, context_val=x_val, progress=False)
    params = jax.block_until_ready(result.state.best_params)
    seconds = _clocks() - start
    return np.asarray(jf.log_prob(flow, params, jnp.float32(th_te), context=jnp.float32(x_te)), np.float64), seconds


def fit_flowjax(args, data, config, spline: bool = True):
    """(log q on the test set, [wall, CPU] seconds of the fit) for flowjax's ``coupling_flow`` with a
    rational-quadratic spline (``spline=False``: its default affine transformer), fitted with
    ``fit_to_data`` on the data standardised as jaxflow's (its log-det added back)."""
    from flowjax.bijections import RationalQuadraticSpline
    from flowjax.distributions import Normal
    from flowjax.flows import coupling_flow
    from flowjax.train import fit_to_data

    (th_tr, x_tr), (th_val, x_val), (th_te, x_te) = data
    th_all, x_all = np.concatenate([th_tr, th_val]), np.concatenate([x_tr, x_val])
    mu, sd = th_tr.mean(0), th_tr.std(0)
    mu_c, sd_c = x_tr.mean(0), x_tr.std(0)
    key_init, key_fit = jax.random.split(jax.random.key(config.seed))
    transformer = RationalQuadraticSpline(knots=args.bins - 1, interval=args.bound) if spline else None  # inner knots
    dist = coupling_flow(key_init, base_dist=Normal(jnp.zeros(2)), cond_dim=2, flow_layers=args.layers,
                         transformer=transformer, nn_width=args.hidden_dim, nn_depth=args.num_hidden + 1,
                         nn_activation=jax.nn.leaky_relu)
    epochs = config.steps // (len(th_tr) // config.batch_size)
    start = _clocks()
    dist, _ = fit_to_data(key_fit, dist, (jnp.float32((th_all - mu) / sd), jnp.float32((x_all - mu_c) / sd_c)),
                          optimizer=train.optimizer(config), max_epochs=epochs, max_patience=epochs,
                          batch_size=config.batch_size, val_prop=len(th_val) / len(th_all), show_progress=False)
    dist = jax.block_until_ready(dist)
    seconds = _clocks() - start
    log_q = dist.log_prob(jnp.float32((th_te - mu) / sd), condition=jnp.float32((x_te - mu_c) / sd_c))
    return np.asarray(log_q, np.float64) - np.log(sd).sum(), seconds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=2100, help="optimiser steps (rounded down to whole flowjax epochs)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default="results.json")
    p.add_argument("--methods", nargs="+", default=["jaxflow-nsf", "jaxflow-realnvp", "flowjax-nsf"],
                   choices=["jaxflow-nsf", "jaxflow-realnvp", "flowjax-nsf", "flowjax-affine"])
    p.add_argument("--simulations", type=int, default=10_000, help="training + validation (10%%) simulations")
    p.add_argument("--test", type=int, default=20_000, help="held-out joint draws for the KL estimate")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--layers", type=int, default=5, help="coupling layers of every flow")
    p.add_argument("--hidden-dim", type=int, default=64)
    p.add_argument("--num-hidden", type=int, default=1, help="jaxflow's H -> H layers (flowjax nn_depth = this + 1)")
    p.add_argument("--bins", type=int, default=8)
    p.add_argument("--bound", type=float, default=3.0)
    args = p.parse_args(argv)

    theta_te, x_te = simulate(np.random.default_rng(10_000), args.test)
    log_p = log_joint(theta_te, x_te) - log_evidence(x_te)
    check = check_evidence(x_te)
    assert check["grid_doubling_max_abs"] < 1e-4 and check["vs_2d_grid_max_abs"] < 1e-4, check
    print(f"evidence grid: doubling changes log p(x) by <= {check['grid_doubling_max_abs']:.1e}, "
          f"2-D grid by <= {check['vs_2d_grid_max_abs']:.1e}")

    models = {
        "jaxflow-nsf": jf.NeuralSplineFlow(dim=2, num_layers=args.layers, bins=args.bins, bound=args.bound,
                                           hidden_dim=args.hidden_dim, num_hidden=args.num_hidden, context_dim=2),
        "jaxflow-realnvp": jf.RealNVP(dim=2, num_flows=args.layers, hidden_dim=args.hidden_dim,
                                      num_hidden=args.num_hidden, scale="tanh", identity_init=True, context_dim=2),
    }
    n_val = args.simulations // 10
    steps_per_epoch = (args.simulations - n_val) // args.batch_size
    steps = max(1, args.steps // steps_per_epoch) * steps_per_epoch
    runs = []
    for seed in args.seeds:
        theta, x = simulate(np.random.default_rng(seed), args.simulations)
        data = ((theta[n_val:], x[n_val:]), (theta[:n_val], x[:n_val]), (theta_te, x_te))
        config = train.TrainConfig(steps=steps, batch_size=args.batch_size, lr=args.lr, eval_every=steps_per_epoch,
                                   patience=0, seed=seed, steps_per_call=steps_per_epoch)
        for method in args.methods:
            if method.startswith("flowjax"):
                log_q, seconds = fit_flowjax(args, data, config, spline=method == "flowjax-nsf")
            else:
                log_q, seconds = fit_jaxflow(models[method], data, config)
            gap = log_p - log_q
            runs.append({"method": method, "seed": seed, "kl": float(gap.mean()), "kl_se": float(gap.std(ddof=1)
                         / np.sqrt(len(gap))), "wall_s": seconds[0], "cpu_s": seconds[1]})
            print(f"seed {seed} {method:16s} KL {runs[-1]['kl']:.4f} +- {runs[-1]['kl_se']:.4f} nats  "
                  f"wall {seconds[0]:6.1f} s, CPU {seconds[1]:6.1f} s", flush=True)
            with open(args.out, "w") as fh:
                json.dump({"args": vars(args), "steps": steps, "evidence_check": check, "runs": runs}, fh, indent=1)

    print(f"\nE_x KL(p || q), nats, {len(args.seeds)} seed(s), {steps} steps x {args.batch_size}; "
          "mean +- s.e. over seeds [min, max]; mean wall and CPU s (compilation included)")
    for method in args.methods:
        rows = [r for r in runs if r["method"] == method]
        kl = np.array([r["kl"] for r in rows])
        se = kl.std(ddof=1) / np.sqrt(len(kl)) if len(kl) > 1 else rows[0]["kl_se"]
        wall, cpu = (np.mean([r[k] for r in rows]) for k in ("wall_s", "cpu_s"))
        print(f"{method:16s} {kl.mean():.4f} +- {se:.4f}  [{kl.min():.4f}, {kl.max():.4f}]  {wall:6.1f}  {cpu:6.1f}")


if __name__ == "__main__":
    main()
