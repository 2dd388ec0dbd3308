"""Runs for ``test_multi_device.py`` in a fresh process, whose CPU the caller split into devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=4``, read when jax is imported).

``python tests/multi_device_runs.py OUT``: the same 20-step fit on 1 and on 4 devices, each also
interrupted at step 10 (a signal from its checkpoint) and resumed on the other device count, and
``mean_nll`` sharded and not; writes the final parameters, validation NLLs and checkpoint
metadata to ``OUT/runs.npz`` and ``OUT/runs.json``. Then ``jaxflow fit`` of :data:`FIT` on one
device, in this process, into ``OUT/single``: the truth of the two-process test.
"""

import json
import os
import signal
import sys

import jax
import numpy as np

import jaxflow
from jaxflow import checkpoint, cli, data, train

FLOW = jaxflow.RealNVP(dim=2, num_flows=2, hidden_dim=8, num_hidden=1, scale="tanh", identity_init=True)
CONFIG = train.TrainConfig(steps=20, batch_size=32, eval_every=5, steps_per_call=5)
#: the ``jaxflow`` command line of the two-process test (plus ``--out`` and its device options)
FIT = ["fit", "moons", "--steps", "20", "--eval-every", "10", "--batch-size", "32", "--num-flows", "2",
       "--hidden-dim", "8", "--num-hidden", "1", "--steps-per-call", "5", "--quiet"]


def main(out: str) -> None:
    x = data.toy("moons").sample(600, 0)
    flow = train.standardize(FLOW, x)
    meshes = {1: train.data_mesh(1), 4: train.data_mesh(4)}
    fit = lambda devices, **kw: train.fit(flow, x[100:], x[:100], CONFIG, progress=False, mesh=meshes[devices], **kw)
    arrays, record = {}, {"val_nll": {}, "devices": {}}
    for devices in (1, 4):
        nlls = []
        state = fit(devices, checkpoint=lambda s: nlls.append(s.best_val_nll)).state
        arrays[f"straight_{devices}"] = np.concatenate([np.ravel(a) for a in jax.tree.leaves(state.params)])
        record["val_nll"][devices] = nlls
    for first, then in ((4, 1), (1, 4)):
        run_dir = os.path.join(out, f"run_{first}")

        def save_and_stop(state):
            checkpoint.save(run_dir, flow, CONFIG, state, {}, meshes[first])
            if state.step == 10:
                os.kill(os.getpid(), signal.SIGTERM)

        assert fit(first, checkpoint=save_and_stop).status == "interrupted"
        record["devices"][first] = checkpoint.read_metadata(run_dir)["devices"]
        state = fit(then, state=checkpoint.load(run_dir).state).state
        arrays[f"resumed_{first}_on_{then}"] = np.concatenate([np.ravel(a) for a in jax.tree.leaves(state.params)])
    params = jax.device_put(jaxflow.init(flow, jax.random.key(0)), jax.sharding.NamedSharding(meshes[4], jax.sharding.PartitionSpec()))
    record["mean_nll"] = {"one_device": train.mean_nll(flow, params, x[:101], chunk=30),
                          "four_devices": train.mean_nll(flow, params, x[:101], chunk=30, mesh=meshes[4])}
    np.savez(os.path.join(out, "runs.npz"), **arrays)
    with open(os.path.join(out, "runs.json"), "w") as f:
        json.dump(record, f)
    assert cli.main([*FIT, "--out", os.path.join(out, "single")]) == 0  # --devices 1


if __name__ == "__main__":
    main(sys.argv[1])
