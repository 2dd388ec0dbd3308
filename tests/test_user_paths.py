"""What users do, the way they do it: a run read back in a fresh process, a params-only file
written by a hand-written loop, and the one-line errors of common slips (a forgotten key, an int
event shape, a TFP latent, no validation data)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxflow as jf
from jaxflow import checkpoint, train
from jaxflow.core import layer as core_layer
from jaxflow.core import serialize
from tests.test_library_hardening import run_python


def _jaxflow_kinds() -> set[str]:
    """Every spec kind jaxflow defines (tests may register their own; those are not jaxflow's)."""
    jf.layers.import_all()
    return {name for name, cls in serialize.SPEC_TYPES.items() if cls.__module__.startswith("jaxflow.")}


def test_a_fresh_process_that_reads_a_spec_knows_every_layer_kind():
    """Kinds register when their module is imported: reading a checkpoint's spec must import them
    all, whichever names the reading process happened to touch. Each kind is looked up with a
    bogus field: a known kind says "unknown field", an unregistered one "unknown spec type"."""
    kinds = _jaxflow_kinds()
    assert {"Permute", "LULinear", "AffineCoupling", "Squeeze", "FactorOut"} <= kinds
    assert {name for name, cls in core_layer.LAYERS.items() if cls.__module__.startswith("jaxflow.")} <= kinds
    result = run_python(
        "from jaxflow import checkpoint\n"
        f"for name in {sorted(kinds)!r}:\n"
        "    try:\n"
        "        checkpoint._spec({'version': 2, 'spec': {'type': name, 'bogus_field': 0}}, 'x')\n"
        "    except checkpoint.CheckpointError as err:\n"
        "        assert 'unknown field' in str(err), str(err)\n"
        "print('ok')\n")
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_a_run_built_like_the_readme_loads_in_a_fresh_process(tmp_path):
    """A library run with ActNorm, an alternate coupling, LULinear and a random Permute, saved
    here, loads in a fresh interpreter and gives the same log-densities."""
    flow = jf.Flow(event_shape=(3,), layers=jf.Repeat(jf.Chain(
        jf.ActNorm(), jf.AffineCoupling(mask="alternate", conditioner=jf.MLP(8, 1)), jf.LULinear(),
        jf.Permute("random", seed=3)), 2))
    x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    config = train.TrainConfig(steps=1, batch_size=8)
    state = train.init_state(flow, config, data=x)
    checkpoint.save(str(tmp_path), flow, config, state, {"data": "test"})
    expected = np.asarray(jf.log_prob(flow, state.params, x[:4]))
    result = run_python(
        "import numpy as np, jaxflow as jf\n"
        "from jaxflow import checkpoint\n"
        f"ckpt = checkpoint.load({str(tmp_path)!r})\n"
        f"x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)[:4]\n"
        "print(repr(np.asarray(jf.log_prob(ckpt.flow, ckpt.state.params, x)).tolist()))\n")
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.asarray(eval(result.stdout.strip()), np.float32), expected)


# ------------------------------------------------------------------ one-line errors of common slips

def _flow():
    return jf.RealNVP(dim=2, num_flows=2, hidden_dim=8, num_hidden=1)


@pytest.mark.parametrize("call, message", [
    (lambda: jf.init(_flow(), 0), r"init\(flow, key\): key must be a JAX PRNG key such as jax.random.key\(0\), got int 0"),
    (lambda: jf.init(_flow(), jax.random.split(jax.random.key(0), 3)), "one PRNG key, got a batch of keys of shape"),
    (lambda: jf.sample(_flow(), jf.init(_flow(), jax.random.key(0)), 100),
     r"sample\(flow, params, key, num_samples\): key must be a JAX PRNG key .* got int 100"),
    (lambda: jf.Flow(event_shape=2, layers=jf.AffineCoupling()), r"event_shape must be a tuple of ints such as \(2,\), got 2"),
    (lambda: jf.MultiScaleRealNVP(event_shape=28), r"event_shape must be \(H, W, C\), a tuple, got 28"),
])
def test_common_slips_are_one_line_errors(call, message):
    with pytest.raises((TypeError, ValueError), match=message) as info:
        call()
    assert "\n" not in str(info.value)


def test_both_kinds_of_key_are_accepted():
    flow = _flow()
    for make in (jax.random.key, jax.random.PRNGKey):
        params = jf.init(flow, make(0))
        assert jf.sample(flow, params, make(1), 3).shape == (3, 2)


def test_a_tfp_latent_is_told_how_to_wrap_it():
    import distrax
    import tensorflow_probability.substrates.jax as tfp

    flow = _flow()
    params = jf.init(flow, jax.random.key(0))
    latent = tfp.distributions.MultivariateNormalDiag(jnp.zeros(2, jnp.float32), jnp.ones(2, jnp.float32))
    with pytest.raises(TypeError, match=r"wrap it: latent=distrax.as_distribution\(d\)"):
        jf.log_prob(flow, params, jnp.zeros((3, 2)), latent=latent)
    wrapped = jf.log_prob(flow, params, jnp.zeros((3, 2)), latent=distrax.as_distribution(latent))
    np.testing.assert_allclose(wrapped, jf.log_prob(flow, params, jnp.zeros((3, 2))), rtol=1e-6)

    class DuckLatent:
        event_shape = (2,)

        def log_prob(self, z):
            return -0.5 * (z ** 2).sum(-1)

    with pytest.raises(TypeError, match=r"got .*DuckLatent; subclass distrax.Distribution"):
        jf.log_prob(flow, params, jnp.zeros((3, 2)), latent=DuckLatent())


def test_fit_without_validation_data_is_one_line():
    x = np.zeros((16, 2), np.float32)
    with pytest.raises(ValueError, match="fit: x_val is required"):
        train.fit(_flow(), x, None, train.TrainConfig(steps=1, batch_size=4), progress=False)


# ------------------------------------------------------------------ what save writes, load reads

def _state_and_config():
    flow = jf.Flow(event_shape=(3,), layers=jf.Repeat(jf.Chain(jf.AffineCoupling(mask="alternate", conditioner=jf.MLP(8, 1)),
                                                               jf.LULinear()), 2))
    config = train.TrainConfig(steps=1, batch_size=8)
    return flow, config, train.init_state(flow, config)


@pytest.mark.parametrize("damage, message", [
    (lambda state: state._replace(opt_state=__import__("optax").sgd(1e-3).init(state.params)),
     r"opt_state has another structure .* save the parameters alone with jaxflow.save"),
    (lambda state: state._replace(params=jax.tree.map(lambda a: a.astype(jnp.bfloat16), state.params)),
     "parameters of dtype bfloat16; a checkpoint holds one of float32 or float64"),
])
def test_save_refuses_what_load_cannot_read(tmp_path, damage, message):
    flow, config, state = _state_and_config()
    with pytest.raises(checkpoint.CheckpointError, match=message) as info:
        checkpoint.save(str(tmp_path / "run"), flow, config, damage(state), {})
    assert "\n" not in str(info.value) and not (tmp_path / "run").exists()


def test_a_params_file_round_trips_exactly_in_a_fresh_process(tmp_path):
    flow, _, state = _state_and_config()
    params = jax.tree.map(lambda a: a + 0.01 * jnp.arange(a.size, dtype=a.dtype).reshape(a.shape), state.params)
    path = str(tmp_path / "model.jaxflow")
    jf.save(path, flow, params)
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    result = run_python(
        "import numpy as np, jaxflow as jf\n"
        f"flow, params = jf.load({path!r})\n"
        "x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)\n"
        "print(repr(flow)); print(repr(np.asarray(jf.log_prob(flow, params, x)).tolist()))\n")
    assert result.returncode == 0, result.stderr
    spec, values = result.stdout.strip().splitlines()
    assert spec == repr(flow)
    np.testing.assert_array_equal(np.asarray(eval(values), np.float32), jf.log_prob(flow, params, x))


def test_a_params_file_in_float64_and_its_damage(tmp_path):
    flow, _, _ = _state_and_config()
    params = jf.init(flow, jax.random.key(1), jnp.float64)
    path = tmp_path / "model.jaxflow"
    jf.save(str(path), flow, params)
    loaded_flow, loaded = jf.load(str(path))
    assert loaded_flow == flow
    assert jax.tree.all(jax.tree.map(lambda a, b: a.dtype == b.dtype and bool((a == b).all()), params, loaded))
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 1
    (tmp_path / "flipped.jaxflow").write_bytes(bytes(raw))
    (tmp_path / "link.jaxflow").symlink_to(path)
    for name, message in (("flipped.jaxflow", "SHA-256|corrupt|not a jaxflow model file"),
                          ("link.jaxflow", "symbolic link"), ("missing.jaxflow", "cannot read model file")):
        with pytest.raises(checkpoint.CheckpointError, match=message) as info:
            jf.load(str(tmp_path / name))
        assert "\n" not in str(info.value)
    with pytest.raises(checkpoint.CheckpointError, match="parameters of dtype bfloat16"):
        jf.save(str(tmp_path / "half.jaxflow"), flow, jax.tree.map(lambda a: a.astype(jnp.bfloat16), params))


def test_the_package_metadata_the_module_and_the_command_say_one_version(capsys):
    """pyproject.toml reads ``jaxflow.__version__`` (an installed copy carries it in its metadata)."""
    import importlib.metadata

    from jaxflow.cli import main

    assert importlib.metadata.version("jaxflow") == jf.__version__
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"jaxflow {jf.__version__}"


def test_a_coordinate_no_coupling_transforms_is_named_in_a_warning():
    """With an odd-sized "alternate" mask and Permute("reverse") between couplings, the even
    coordinates map onto themselves and data coordinate 1 passes through every coupling
    untouched: the warning names it, and the flow's output indeed carries it unchanged."""
    layer = jf.Repeat(jf.Chain(jf.AffineCoupling(mask="alternate", conditioner=jf.MLP(8, 1)), jf.Permute("reverse")), 3)
    with pytest.warns(UserWarning, match=r"coordinate\(s\) \[1\] of the data are never transformed by a coupling") as caught:
        flow = jf.Flow(event_shape=(3,), layers=layer)
    assert len(caught) == 1 and caught[0].filename == __file__
    params = jax.tree.map(lambda a: a + 0.3, jf.init(flow, jax.random.key(0), jnp.float64))
    x = jax.random.normal(jax.random.key(1), (5, 3), jnp.float64)
    z = jf.f(flow, params, x)[0]
    np.testing.assert_array_equal(z[:, 1], x[:, 1])  # three reverses leave coordinate 1 at position 1
    assert not np.isclose(z[:, [0, 2]], x[:, [0, 2]]).any()


@pytest.mark.parametrize("make", [
    lambda: jf.Flow(event_shape=(4,), layers=jf.Repeat(jf.Chain(jf.AffineCoupling(mask="alternate"), jf.Permute("reverse")), 2)),
    lambda: jf.Flow(event_shape=(3,), layers=jf.Repeat(jf.Chain(jf.AffineCoupling(mask="alternate"), jf.LULinear()), 2)),
    lambda: jf.Flow(event_shape=(5,), layers=jf.Repeat(jf.Chain(jf.AffineCoupling(mask="alternate"), jf.Permute("random", 1)), 4)),
    lambda: jf.RealNVP(dim=3, num_flows=3),
])
def test_flows_that_transform_every_coordinate_do_not_warn(make):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make()
