"""The learned context embedding (``embedding``, ``embedding_dim`` of every flow spec) against a hand
computation: the MLP written out in NumPy, then the same layers with the embedded context. Also:
gradients reach the embedding, training moves it, checkpoints and model files keep it (read back in a
fresh process), and a bad embedding fails in one line. Its torch twin: ``parity_tests/test_embedding_twin.py``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxflow as jf
from core_helpers import perturb
from core_tolerances import assert_close

EMBEDDING = jf.MLP(hidden_dim=8, num_hidden=1, activation="tanh")
WITH_EMBEDDING = dict(context_dim=2, embedding=EMBEDDING, embedding_dim=3)

FLOWS = {
    "flow": jf.Flow((3,), jf.Repeat(jf.Chain(jf.AffineCoupling("alternate"), jf.LULinear()), 2),
                    context_affine=jf.Affine((0.5, -1.0), (2.0, 0.5)), **WITH_EMBEDDING),
    "realnvp": jf.RealNVP(4, 2, hidden_dim=8, num_hidden=1, **WITH_EMBEDDING),
    "nsf": jf.NeuralSplineFlow(4, 2, hidden_dim=8, num_hidden=1, **WITH_EMBEDDING),
    "multiscale": jf.MultiScaleRealNVP((4, 4, 1), 2, 1, 4, 0, **WITH_EMBEDDING),
    "glow": jf.Glow((4, 4, 1), 2, 2, 4, 0, **WITH_EMBEDDING),
}


def _setup(flow, seed=0, dtype=jnp.float64):
    params = perturb(jf.init(flow, jax.random.key(seed), dtype), seed + 1, 0.2)
    rng = np.random.default_rng(seed)
    x, c = rng.uniform(-1, 1, (5, *flow.event_shape)), rng.standard_normal((5, flow.context_dim))
    return params, x.astype(dtype), c.astype(dtype)


def _mlp_by_hand(params, h):
    """``EMBEDDING`` (tanh, one hidden layer) in NumPy: Dense, tanh, Dense, tanh, Dense."""
    for name in ("input", "hidden_0"):
        h = np.tanh(h @ np.asarray(params[name]["kernel"]) + np.asarray(params[name]["bias"]))
    return h @ np.asarray(params["dims"]["kernel"]) + np.asarray(params["dims"]["bias"])


@pytest.mark.parametrize("name", sorted(FLOWS))
def test_log_prob_and_sample_are_the_layers_on_the_embedded_context(name):
    flow = FLOWS[name]
    params, x, c = _setup(flow)
    assert set(params) == {"embedding", "layers"} and flow.layer_context_dim == 3
    raw = c if flow.context_affine is None else (c - np.array([0.5, -1.0])) / np.array([2.0, 0.5])
    embedded = _mlp_by_hand(params["embedding"], raw)
    layers_alone = jf.Flow(flow.event_shape, flow.layers, context_dim=3)
    expected = jf.log_prob(layers_alone, params["layers"], x, context=embedded)
    assert_close(jf.log_prob(flow, params, x, context=c), expected, "same_math")
    if name == "glow":  # sampling by context (one preset: each compiles the inverse)
        key = jax.random.key(3)
        assert_close(jf.sample(flow, params, key, 2, context=c),
                     jf.sample(layers_alone, params["layers"], key, 2, context=embedded), "same_math")


@dataclasses.dataclass(frozen=True)
class LinearEmbedding(jf.FlaxConditioner):
    """A user's embedding: one ``Dense`` layer, ``c W + b``."""

    def module(self, out_dim):
        return flax.linen.Dense(out_dim, name="output")


def test_a_flax_conditioner_is_an_embedding():
    flow = jf.Flow((3,), FLOWS["flow"].layers, context_dim=2, embedding=LinearEmbedding(), embedding_dim=4)
    params, x, c = _setup(flow, dtype=jnp.float32)  # the module's Dense is float32
    dense = params["embedding"]
    embedded = c @ np.asarray(dense["kernel"]) + np.asarray(dense["bias"])
    expected = jf.log_prob(jf.Flow((3,), flow.layers, context_dim=4), params["layers"], x, context=embedded)
    assert_close(jf.log_prob(flow, params, x, context=c), expected, "same_math", jnp.float32)


def test_the_gradient_reaches_every_embedding_parameter_and_training_moves_them(tmp_path):
    flow = FLOWS["realnvp"]
    params, x, c = _setup(flow)
    grads = jax.grad(lambda p: jf.log_prob(flow, p, x, context=c).mean())(params)
    assert all(np.abs(leaf).max() > 0 for leaf in jax.tree_util.tree_leaves(grads["embedding"]))
    fitted = _fit(flow, tmp_path)
    start = jf.init(fitted.flow, jax.random.key(0))  # the trainer's flow: the standardisation in front
    moved = jax.tree_util.tree_map(lambda a, b: float(np.abs(a - b).max()), fitted.state.params["embedding"],
                                   start["embedding"])
    assert min(jax.tree_util.tree_leaves(moved)) > 0


def _fit(flow, run_dir):
    """Ten Adam steps on a conditional Gaussian ``x ~ N(c_0, 1)``, checkpointed to ``run_dir``."""
    from jaxflow import checkpoint, train

    rng = np.random.default_rng(0)
    c = rng.standard_normal((200, 2)).astype(np.float32)
    x = (c[:, :1] + rng.standard_normal((200, flow.event_shape[0]))).astype(np.float32)
    fitted = train.standardize(flow, x[:150], c[:150])
    config = train.TrainConfig(steps=10, batch_size=32, eval_every=5)
    save = lambda state: checkpoint.save(str(run_dir), fitted, config, state, {"data": "test"})
    result = train.fit(fitted, x[:150], x[150:], config, context_train=c[:150], context_val=c[150:], checkpoint=save,
                       progress=False)
    return type("Fitted", (), {"flow": fitted, "state": result.state, "x": x[150:], "c": c[150:]})


_READ_BACK = """
import json, sys
import numpy as np
import jaxflow
from jaxflow import checkpoint
run, model, x, c = sys.argv[1:]
x, c = np.load(x), np.load(c)
ckpt = checkpoint.load(run)
flow, params = jaxflow.load(model)
print(json.dumps([jaxflow.log_prob(ckpt.flow, ckpt.state.best_params, x, context=c).tolist(),
                  jaxflow.log_prob(flow, params, x, context=c).tolist(), repr(flow)]))
"""


def test_checkpoints_and_model_files_keep_the_embedding_in_a_fresh_process(tmp_path):
    fitted = _fit(FLOWS["realnvp"], tmp_path / "run")
    jf.save(str(tmp_path / "model.jaxflow"), fitted.flow, fitted.state.best_params)
    np.save(tmp_path / "x.npy", fitted.x)
    np.save(tmp_path / "c.npy", fitted.c)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])}
    out = subprocess.run([sys.executable, "-c", _READ_BACK, str(tmp_path / "run"), str(tmp_path / "model.jaxflow"),
                          str(tmp_path / "x.npy"), str(tmp_path / "c.npy")], capture_output=True, text=True, env=env,
                         check=True)
    from_checkpoint, from_model_file, spec = json.loads(out.stdout.splitlines()[-1])
    expected = np.asarray(jf.log_prob(fitted.flow, fitted.state.best_params, fitted.x, context=fitted.c))
    np.testing.assert_array_equal(np.float32(from_checkpoint), expected)
    np.testing.assert_array_equal(np.float32(from_model_file), expected)
    assert spec == repr(fitted.flow) and "embedding=MLP(hidden_dim=8" in spec
    assert jf.core.serialize.spec_from_json(jf.core.serialize.spec_to_json(fitted.flow)) == fitted.flow


LAYERS = jf.Repeat(jf.AffineCoupling("alternate"), 2)


@pytest.mark.parametrize("build, message", [
    (lambda: jf.Flow((3,), LAYERS, embedding=EMBEDDING, embedding_dim=3),
     "Flow: an embedding needs a conditional flow (context_dim > 0)"),
    (lambda: jf.Flow((3,), LAYERS, 2, embedding_dim=3), "Flow: embedding_dim is the output size of an embedding"),
    (lambda: jf.Flow((3,), LAYERS, 2, embedding=EMBEDDING), "Flow: embedding_dim (the size of the embedded context "
                                                             "every conditioner sees) must be >= 1, got 0"),
    (lambda: jf.Flow((3,), LAYERS, 2, embedding=jf.ResNet(), embedding_dim=3),
     "Flow: embedding must be a network of context vectors (jaxflow.MLP or a jaxflow.FlaxConditioner), got ResNet("),
    (lambda: jf.Flow((3,), LAYERS, 2, embedding="mlp", embedding_dim=3), "Flow: embedding must be a network"),
    (lambda: jf.Flow((3,), LAYERS, 2, embedding=jf.MLP, embedding_dim=3), "Flow: embedding must be a network"),
    (lambda: jf.RealNVP(4, 2, context_dim=2, embedding=EMBEDDING, embedding_dim=2.5),
     "RealNVP: embedding_dim (the size of the embedded context every conditioner sees) must be an int"),
    (lambda: jf.Glow((4, 4, 1), 1, embedding=EMBEDDING, embedding_dim=2),
     "Glow: an embedding needs a conditional flow"),
])
def test_a_bad_embedding_fails_in_one_line(build, message):
    with pytest.raises((ValueError, TypeError)) as info:
        build()
    assert message in str(info.value) and "\n" not in str(info.value)


def test_params_of_the_wrong_layout_fail_in_one_line():
    flow = FLOWS["flow"]
    layers_only = jf.init(jf.Flow(flow.event_shape, flow.layers, 3), jax.random.key(0))
    with pytest.raises(ValueError, match=r"missing \[\"\['embedding'\]"):
        jf.log_prob(flow, layers_only, np.zeros(3), context=np.zeros(2))
