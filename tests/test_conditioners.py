"""Conditioners: the protocol's implementations (MLP with any activation, a user's own Flax module),
training, jit and sampling with a user's conditioner, and checkpoints of registered and
unregistered conditioner classes."""

from __future__ import annotations

import dataclasses
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxflow
from jaxflow import checkpoint, train
from core_tolerances import assert_close


class GeluNet(nn.Module):
    """A user's Flax module: Dense, gelu, Dense named ``output``."""

    width: int
    out_dim: int

    @nn.compact
    def __call__(self, h):
        return nn.Dense(self.out_dim, name="output")(nn.gelu(nn.Dense(self.width, name="trunk")(h)))


@dataclasses.dataclass(frozen=True)
class GeluConditioner(jaxflow.FlaxConditioner):
    width: int = 16

    def module(self, out_dim):
        return GeluNet(self.width, out_dim)


@dataclasses.dataclass(frozen=True)
class UnregisteredConditioner(GeluConditioner):
    pass


jaxflow.register(GeluConditioner)  # the one line that lets checkpoints name it


def _flow(conditioner, transform=jaxflow.RQSpline(bins=4)):
    return jaxflow.Flow((2,), jaxflow.Repeat(jaxflow.Chain(jaxflow.Coupling("alternate", conditioner, transform),
                                                           jaxflow.Permute("reverse")), 2))


def test_mlp_activation_is_the_named_function_between_the_layers():
    mlp = jaxflow.MLP(hidden_dim=5, num_hidden=1, activation="tanh")
    params = mlp.init(jax.random.key(0), 3, 4, jnp.float64)
    h = jnp.asarray(np.random.default_rng(0).standard_normal((6, 3)))
    dense = lambda name, a: a @ params[name]["kernel"] + params[name]["bias"]
    want = dense("dims", jnp.tanh(dense("hidden_0", jnp.tanh(dense("input", h)))))
    assert_close(mlp.apply(params, h, 4), want, "same_math")
    leaky = jaxflow.MLP(hidden_dim=5, num_hidden=1)
    assert leaky.activation == "leaky_relu"
    assert float(jnp.max(jnp.abs(leaky.apply(params, h, 4) - want))) > 1e-3


def test_a_users_flax_conditioner_starts_at_the_identity_trains_jits_and_samples():
    flow = _flow(GeluConditioner())
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((512, 2)) * [1.0, 0.3] + [0.5, 0.0]).astype(np.float32)
    config = train.TrainConfig(steps=60, batch_size=128, lr=1e-2, eval_every=30, patience=0)
    start = train.init_state(flow, config)
    params = start.params
    assert_close(jaxflow.f(flow, params, x[:8])[0], x[:8], "same_math")  # identity couplings, two reversals
    trained = train.fit(flow, x[:448], x[448:], config, state=start, progress=False).state.params
    before, after = train.mean_nll(flow, params, x[448:]), train.mean_nll(flow, trained, x[448:])
    assert after < before - 0.1
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), params, trained)
    assert all(jax.tree.leaves(moved))  # every leaf, the user's trunk and output too, received gradient
    samples = jax.jit(lambda key: jaxflow.sample(flow, trained, key, 5))(jax.random.key(1))
    assert samples.shape == (5, 2) and bool(jnp.all(jnp.isfinite(samples)))


def test_a_registered_conditioner_round_trips_in_a_checkpoint_and_an_unregistered_one_is_refused(tmp_path):
    for conditioner, ok in ((GeluConditioner(width=8), True), (UnregisteredConditioner(width=8), False)):
        flow = _flow(conditioner)
        config = train.TrainConfig(steps=2, batch_size=8)
        state = train.init_state(flow, config)
        params = state.params
        run_dir = str(tmp_path / type(conditioner).__name__)
        if ok:
            checkpoint.save(run_dir, flow, config, state, {})
            loaded = checkpoint.load(run_dir)
            assert loaded.flow == flow
            x = jnp.ones((3, 2))
            assert_close(jaxflow.log_prob(loaded.flow, loaded.state.params, x), jaxflow.log_prob(flow, params, x),
                         "same_math", jnp.float32)
        else:
            with pytest.raises(TypeError, match=r"^cannot serialise UnregisteredConditioner: not a registered "
                                                r"jaxflow spec \(register its class with jaxflow.register") as info:
                checkpoint.save(run_dir, flow, config, state, {})
            assert "\n" not in str(info.value) and not os.path.exists(run_dir)


def test_register_refuses_a_name_taken_by_another_class():
    @dataclasses.dataclass(frozen=True)
    class MLP(jaxflow.FlaxConditioner):
        def module(self, out_dim):
            return GeluNet(4, out_dim)

    with pytest.raises(ValueError, match="the spec name 'MLP' is taken by jaxflow.nets.mlp.MLP"):
        jaxflow.register(MLP)
