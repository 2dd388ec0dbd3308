"""``python -m bench --suite accelerator``: the accelerator benchmark in one call (``bench/accelerator.sh``).

On a CUDA machine (``--device gpu``, the default there): the small, medium and large
configurations in float32 (``jax.default_matmul_precision("highest")``, no TF32 in torch) and in
bfloat16, jaxflow against torchref eager and ``torch.compile``, ``log_prob`` / ``sample`` / train
step, with samples/s, the fraction of the measured matmul peak and compile (warm-up) times
(:func:`bench.__main__.main` once per dtype); then the README's accelerator MNIST model, a
``jaxflow.MultiScaleRealNVP`` on 28x28x1 images (images/s and compile seconds of each operation;
an 8x8x1 smoke model on CPU). Writes ``<out>/<stem>_accelerator.json`` and prints a table. Sized to finish
in under 8 minutes on one GPU: 5 rounds, no batch sweep, compile times at depths 4 and 16 in
float32 only. ``--device cpu`` runs the same suite at smoke sizes (small configuration, batch 64,
2 rounds, no ``torch.compile``, which spends minutes compiling C++ on a CPU; compile times, as on
the GPU, in float32 only): the test suite's run.
"""

from __future__ import annotations

import time

import jax

import jaxflow
from bench.harness import interleaved_rounds, spread
from bench.report import result_stem, write_json

__all__ = ["suite_argv", "image_rows", "run"]

#: the image model: the README's accelerator MNIST command's MultiScaleRealNVP on a GPU; a smoke-sized one on CPU
IMAGE_MODELS = {
    "gpu": dict(event_shape=(28, 28, 1), num_scales=3, channels=64, num_blocks=4),
    "cpu": dict(event_shape=(8, 8, 1), num_scales=2, channels=8, num_blocks=1),
}


def suite_argv(device: str, dtype: str, out: str) -> list[str]:
    """The ``python -m bench`` arguments of one dtype's part of the suite."""
    common = ["--device", device, "--dtype", dtype, "--out", out, "--no-peers", "--no-sweep"]
    if dtype != "float32":
        common.append("--no-compile-times")  # compile time against depth: float32 only, on every device
    if device == "cpu":
        return common + ["--quick"]
    compile_times = ["--compile-depths", "4,16", "--compile-ops", "train_step"] if dtype == "float32" else []
    return common + ["--configs", "small,medium,large", "--torch-compile", "--rounds", "5"] + compile_times


def image_rows(device: str, batch: int, rounds: int) -> list[dict]:
    """``MultiScaleRealNVP`` (:data:`IMAGE_MODELS`): images/s and compile seconds of log_prob, sample and an Adam step."""
    from bench.contenders import adam_train_step

    platform = "gpu" if device == "gpu" else "cpu"
    flow = jaxflow.MultiScaleRealNVP(**IMAGE_MODELS[platform])
    name = "MultiScaleRealNVP " + "x".join(map(str, flow.event_shape))
    dev = jax.devices(platform)[0]
    x = jax.device_put(jax.random.uniform(jax.random.key(1), (batch, *flow.event_shape)), dev)
    params = jax.device_put(jaxflow.init(flow, jax.random.key(0), data=x), dev)
    step, optimizer = adam_train_step(flow)
    state = [params, optimizer.init(params)]
    jitted = {"log_prob": jax.jit(lambda p, x: jaxflow.log_prob(flow, p, x)), "sample": jax.jit(lambda p, z: jaxflow.g(flow, p, z)),
              "train_step": jax.jit(step)}

    def train_call():
        state[0], state[1], loss = jitted["train_step"](state[0], state[1], x)
        return loss

    calls = {"log_prob": lambda: jitted["log_prob"](params, x), "sample": lambda: jitted["sample"](params, x),
             "train_step": train_call}
    rows, synced = [], {}
    with jax.default_matmul_precision("highest"):
        for op, call in calls.items():
            synced[op] = lambda call=call: jax.block_until_ready(call())
            start = time.perf_counter()
            synced[op]()
            rows.append({"config": name, "op": op, "batch": batch,
                         "compile_seconds": time.perf_counter() - start})
        samples = interleaved_rounds(synced, rounds, 0.1)
    for row in rows:
        row["seconds"] = spread(samples[row["op"]])
        row["images_per_second"] = batch / row["seconds"]["median"]
    return rows


def run(args, bench_main, device: str) -> dict:
    """The suite on ``device``: ``bench_main(argv)`` per dtype, then the image model; one JSON and a summary table."""
    record = {"device": device, "dtypes": {}}
    for dtype in ("float32", "bfloat16"):
        record["dtypes"][dtype] = bench_main(suite_argv(device, dtype, str(args.out)))
    record["images"] = image_rows(device, 8 if device == "cpu" else 64, 2 if device == "cpu" else 5)
    lines = [f"{'dtype':<9} {'config':<26} {'op':<11} {'implementation':<14} {'samples/s':>11} {'%peak':>6} {'compile s':>9}"]
    for dtype, part in record["dtypes"].items():
        for r in part["results"]:
            lines.append(f"{dtype:<9} {r['config']:<26} {r['op']:<11} {r['implementation']:<14} "
                         f"{r['batch'] / r['seconds']['median']:>11.0f} {100 * r['fraction_of_peak']:>5.0f}% "
                         f"{r['warmup_seconds']:>9.2f}")
    for r in record["images"]:
        lines.append(f"{'float32':<9} {r['config']:<26} {r['op']:<11} {'jaxflow':<14} "
                     f"{r['images_per_second']:>11.0f} {'':>6} {r['compile_seconds']:>9.2f}")
    print("\n" + "\n".join(lines))
    env = record["dtypes"]["float32"]["environment"]
    path = args.out / (result_stem(env, time.strftime("%Y-%m-%dT%H%MZ", time.gmtime())) + "_accelerator.json")
    write_json(record, path)
    print(f"\nwrote {path}")
    return record


