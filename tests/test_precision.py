"""Float64 fits: a white-box Hodgkin-Huxley model through the stiff Kvaerno5 solver."""

import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import tiny_config, tiny_recording
from neuroude.build import build_model
from neuroude.dynamics import trainable_filter
from neuroude.dynamics.mechanistic.hodgkin_huxley import HodgkinHuxley
from neuroude.errors import ConfigError
from neuroude.precision import cast_floating, precision_dtype, x64_enabled
from neuroude.recognition import GRURecognition
from neuroude.runs import RunFolder
from neuroude.train import fit, make_optimizer

# 10 ms of a Hodgkin-Huxley axon driven at 10 uA/cm^2, in 0.25 ms bins: one action potential per trial.
BIN_WIDTH, N_BINS = 0.00025, 40


def _hodgkin_huxley_batch():
    true = HodgkinHuxley(0, i_ext=10.0)

    def simulate(x0):
        def step(x, _):
            for _ in range(20):
                x = x + true(0.0, x, jnp.zeros(0)) * BIN_WIDTH / 20
            return x, x

        return jax.lax.scan(step, x0, None, length=N_BINS)[1]

    rest = HodgkinHuxley.resting_state().astype(jnp.float64)
    paths = jax.vmap(simulate)(jnp.stack([rest, rest.at[0].set(-60.0)]))
    noise = np.random.default_rng(0).normal(size=(2, N_BINS, 1))
    y = jnp.asarray(np.asarray(paths[..., :1]) + noise)
    return y, jnp.zeros((2, N_BINS, 0)), jnp.ones_like(y)


@pytest.fixture(scope="module")
def hodgkin_huxley_fit():
    """Return the float64 model split into parameters and the rest, its data, and the jitted loss and gradient."""
    with jax.enable_x64(True):
        config = tiny_config(
            model={"drift": "hodgkin_huxley", "latent_size": 4, "diffusion": "none", "observation": "gaussian",
                   "observed_states": "model", "constants": {"g_na": 100.0, "i_ext": 10.0}},
            solver={"method": "kvaerno5", "rtol": 1e-8, "atol": 1e-8},
            training={"precision": "float64", "learning_rate": 0.01, "warmup_steps": 0},
        )
        model = cast_floating(build_model(config, 1, 0, jax.random.PRNGKey(0), 0.0), precision_dtype("float64"))
        params, static = eqx.partition(model, trainable_filter(model))
        batch = _hodgkin_huxley_batch()
        key = jax.random.PRNGKey(1)

        @eqx.filter_jit
        @eqx.filter_value_and_grad
        def loss_and_grad(trainable):
            return eqx.combine(trainable, static).loss(*batch, 0.0, BIN_WIDTH, key, 1.0, 1)[0]

    # The fixture leaves 64-bit mode; each test turns it on again around its calls.
    return config, params, loss_and_grad


def _shift_g_na(params, shift):
    return eqx.tree_at(lambda p: p.sde.drift.g_na.raw, params, params.sde.drift.g_na.raw + shift)


def test_g_na_gradient_matches_finite_differences(hodgkin_huxley_fit):
    _, params, loss_and_grad = hodgkin_huxley_fit
    with jax.enable_x64(True):
        loss, grads = loss_and_grad(params)
        step = 1e-3
        central = (loss_and_grad(_shift_g_na(params, step))[0] - loss_and_grad(_shift_g_na(params, -step))[0]) / (
            2 * step
        )

    assert loss.dtype == jnp.float64
    assert grads.sde.drift.g_na.raw.dtype == jnp.float64
    assert float(grads.sde.drift.g_na.raw) == pytest.approx(float(central), rel=1e-6)
    assert abs(float(central)) > 1e-3


def test_float64_steps_lower_loss(hodgkin_huxley_fit):
    config, params, loss_and_grad = hodgkin_huxley_fit
    with jax.enable_x64(True):
        optimizer = make_optimizer(config.training)
        opt_state = optimizer.init(params)

        # One compiled update, as in a fit's training step, because op by op the optimiser's float64
        # arithmetic compiled hundreds of small programs, which took most of the test's time.
        @eqx.filter_jit
        def update(grads, opt_state, params):
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        first, _ = loss_and_grad(params)
        for _ in range(4):
            loss, grads = loss_and_grad(params)
            assert np.isfinite(float(loss))
            assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))
            params, opt_state = update(grads, opt_state, params)
        last, _ = loss_and_grad(params)

    assert last.dtype == jnp.float64
    assert all(leaf.dtype == jnp.float64 for leaf in jax.tree_util.tree_leaves(params)
               if jnp.issubdtype(leaf.dtype, jnp.floating))
    assert float(last) < float(first)


def test_cast_floating_keeps_integers():
    with jax.enable_x64(True):
        cast = cast_floating({"x": jnp.ones(2, jnp.float32), "n": jnp.arange(2), "name": "v"}, jnp.float64)
        assert cast["x"].dtype == jnp.float64
        assert cast["n"].dtype == jnp.arange(2).dtype
    assert cast["name"] == "v"


def test_float64_without_x64_rejected(tmp_path, make_model):
    assert not x64_enabled()
    config = tiny_config(training={"precision": "float64"})
    run = RunFolder(tmp_path / "run")
    run.prepare(resume=False, overwrite=False)
    split = {"train": list(range(6)), "validation": [6, 7], "test": [8, 9]}
    with pytest.raises(ConfigError, match="training.precision is 'float64', but JAX's 64-bit mode is off"):
        fit(make_model(config), tiny_recording(), config, split, run, quiet=True)


def test_import_leaves_x64_off_and_cli_enables_it(tmp_path):
    # A child process: turning the mode on here would change every later test.
    script = (
        "import neuroude, neuroude.cli, neuroude.train\n"
        "from neuroude.config import parse_config\n"
        "from neuroude.precision import x64_enabled\n"
        "assert not x64_enabled(), 'importing neuroude turned on 64-bit mode'\n"
        "neuroude.cli._enable_fit_precision(parse_config({}), 'unused', False)\n"
        "assert not x64_enabled(), 'float32 precision turned on 64-bit mode'\n"
        "neuroude.cli._enable_fit_precision(parse_config({'training': {'precision': 'float64'}}), 'unused', False)\n"
        "assert x64_enabled(), 'float64 precision left 64-bit mode off'\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_state_prior_kl_and_scaling():
    location, scale = (-65.0, 0.05, 0.6, 0.3), (10.0, 0.1, 0.1, 0.1)
    recognition = GRURecognition(1, 0, 4, 8, 2, 3, key=jax.random.PRNGKey(0),
                                 state_location=location, state_scale=scale)
    # The same key gives the same weights, without the prior.
    plain = GRURecognition(1, 0, 4, 8, 2, 3, key=jax.random.PRNGKey(0))
    y, drive = jnp.full((5, 1), -60.0), jnp.zeros((5, 0))

    mean, std = recognition.initial_state(y, drive)
    standard_mean, standard_std = plain.initial_state(y, drive)
    np.testing.assert_allclose(mean, np.array(location) + np.array(scale) * standard_mean, rtol=1e-6)
    np.testing.assert_allclose(std, np.array(scale) * standard_std, rtol=1e-6)

    # The KL against N(location, scale^2) is the standard-unit KL of the standardised Gaussian.
    standard_kl = float(plain.initial_kl(standard_mean, standard_std))
    assert float(recognition.initial_kl(mean, std)) == pytest.approx(standard_kl, rel=1e-5)
    assert float(recognition.initial_kl(jnp.asarray(location), jnp.asarray(scale))) == pytest.approx(0.0, abs=1e-6)


def test_state_prior_bad_sizes_rejected():
    with pytest.raises(ConfigError, match="state_location has 2 and state_scale 2 entries; expected 4"):
        GRURecognition(1, 0, 4, key=jax.random.PRNGKey(0), state_location=(0.0, 0.0), state_scale=(1.0, 1.0))
    with pytest.raises(ConfigError, match="state_scale is"):
        GRURecognition(1, 0, 2, key=jax.random.PRNGKey(0), state_location=(0.0, 0.0), state_scale=(1.0, 0.0))


def test_hodgkin_huxley_model_starts_near_rest():
    config = tiny_config(model={"drift": "hodgkin_huxley", "latent_size": 4, "diffusion": "none"})
    model = build_model(config, 1, 0, jax.random.PRNGKey(0), 0.1)
    np.testing.assert_allclose(model.recognition.state_location, HodgkinHuxley.resting_state(), rtol=1e-6)
    assert model.recognition.state_scale == (10.0, 0.1, 0.1, 0.1)
