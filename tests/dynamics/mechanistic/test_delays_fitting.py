"""Conduction delays in the training solver, the fitted model and its configuration.

The fixed-step solver carries a ring buffer of past states when the network
has delays. Its solution must equal `simulate_network` on the same noise-free
problem, follow the closed-form delayed chain, reduce to the instantaneous
path when every delay is 0, and give gradients that match finite differences.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from conftest import tiny_config, tiny_recording
from neuroude.build import build_model
from neuroude.config import load_config, parse_config
from neuroude.data import save_npz
from neuroude.dynamics import SDE
from neuroude.dynamics.mechanistic.delays import DelayLine, simulate_network
from neuroude.dynamics.mechanistic.linear import LinearDynamics
from neuroude.dynamics.mechanistic.network import BrainNetwork
from neuroude.errors import ConfigError, DataFileError
from neuroude.model import LatentUDE
from neuroude.solve import solve_fixed_step
from neuroude.workflow import fit_run

CONNECTIVITY = np.array([[0.0, 1.0, 0.5], [1.0, 0.0, 0.2], [0.5, 0.2, 0.0]])
# Fibre lengths in mm. At 1 m/s they take 10 to 30 ms, which is 2 to 6 solver steps of 5 ms.
FIBRE_LENGTHS = np.array([[0.0, 10.0, 30.0], [10.0, 0.0, 20.0], [30.0, 20.0, 0.0]])
BIN_WIDTH = 0.01
N_SUBSTEPS = 2


def write_network_files(folder, lengths=FIBRE_LENGTHS):
    np.save(folder / "connectome.npy", CONNECTIVITY)
    np.save(folder / "lengths.npy", lengths)


def delayed_config(folder, lengths=FIBRE_LENGTHS, **model):
    """Three Stuart-Landau nodes, delays of 2 to 6 solver steps, files given by absolute path."""
    write_network_files(folder, lengths)
    network = {
        "local": "stuart_landau", "connectivity": str(folder / "connectome.npy"),
        "fibre_lengths": str(folder / "lengths.npy"), "conduction_speed": 1.0, "global_coupling": 20.0,
    }
    settings = {"drift": "network", "latent_size": 6, "network": network, **model}
    return tiny_config(model=settings, solver={"n_substeps": N_SUBSTEPS})


def build(config, n_inputs=0):
    return build_model(config, 3, n_inputs, jax.random.PRNGKey(0), 0.5)


def prior_path(model, x0, n_bins):
    """Integrate the model's prior drift from `x0` without noise, as prediction does."""
    fields = model._fields(jnp.zeros((n_bins, model.encoder.output_size)), None)
    path, _ = model._integrate(fields, x0, 0.0, BIN_WIDTH, n_bins, None)
    return path


X0 = jnp.array([0.8, 0.0, -0.3, 0.5, 0.1, -0.6], jnp.float32)


# -- the solver against the reference simulator and a closed form --------------------------------


def test_model_path_matches_simulate_network(tmp_path):
    model = build(delayed_config(tmp_path, diffusion="none"))
    network = model.sde.drift
    n_bins = 41

    path = prior_path(model, X0, n_bins)
    step = BIN_WIDTH / N_SUBSTEPS
    reference = simulate_network(
        network, X0, step, (n_bins - 1) * N_SUBSTEPS, delays=FIBRE_LENGTHS * 1e-3, save_every=N_SUBSTEPS
    )
    np.testing.assert_allclose(path, reference, rtol=1e-5, atol=1e-6)

    instantaneous = simulate_network(network, X0, step, (n_bins - 1) * N_SUBSTEPS, save_every=N_SUBSTEPS)
    assert float(jnp.max(jnp.abs(path - instantaneous))) > 1e-2


DECAY, GAIN, DELAY = 2.0, 3.0, 0.25  # 1/s, 1/s, seconds


def decaying_chain() -> BrainNetwork:
    """Node 1 decays alone and drives node 2 after DELAY seconds (additive coupling)."""
    local = LinearDynamics(0, size=1, key=jax.random.key(0))
    local = eqx.tree_at(lambda m: m.A, local, jnp.array([[-DECAY]], jnp.float32))
    delays = np.array([[0.0, DELAY], [DELAY, 0.0]])
    return BrainNetwork(local, np.array([[0.0, 0.0], [1.0, 0.0]]), coupling="additive", global_coupling=GAIN,
                        delays=delays)


def chain_solution(t):
    """Node 2 of the chain from x = (1, 0), with node 1 held at 1 before the start (method of steps)."""
    at_delay = GAIN / DECAY * (1 - np.exp(-DECAY * DELAY))
    after = (at_delay + GAIN * (t - DELAY)) * np.exp(-DECAY * (t - DELAY))
    return np.where(t < DELAY, GAIN / DECAY * (1 - np.exp(-DECAY * t)), after)


@pytest.mark.parametrize(("method", "tolerance"), [("euler", 3e-3), ("heun", 2e-4)])
def test_solver_follows_delayed_chain(method, tolerance):
    network = decaying_chain()
    bin_width, n_substeps, n_bins = 0.01, 10, 101

    def fields(t, x, k, frac, past):
        return network.delayed(t, x, jnp.zeros(0), past), jnp.zeros_like(x), jnp.zeros(())

    history = network.delay_line(bin_width / n_substeps)
    path, _ = solve_fixed_step(fields, jnp.array([1.0, 0.0]), 0.0, bin_width, n_bins, n_substeps, None, method,
                               history=history)

    t = np.arange(n_bins) * bin_width
    assert history.length == 251
    np.testing.assert_allclose(path[:, 1], chain_solution(t), atol=tolerance)


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_zero_lags_match_instantaneous_solver(method):
    network = BrainNetwork(LinearDynamics(0, size=2, key=jax.random.key(1)), CONNECTIVITY, global_coupling=2.0)
    x0 = jnp.linspace(-1.0, 1.0, network.state_size)
    zero_lags = DelayLine(jnp.zeros((3, 3), jnp.int32), 4, 3, 2, 0)

    def fields(t, x, k, frac, past=None):
        drift = network(t, x, jnp.zeros(0)) if past is None else network.delayed(t, x, jnp.zeros(0), past)
        return drift, 0.1 * jnp.ones_like(x), jnp.zeros(())

    key = jax.random.PRNGKey(4)
    plain, _ = solve_fixed_step(fields, x0, 0.0, 0.01, 20, 3, key, method)
    buffered, _ = solve_fixed_step(fields, x0, 0.0, 0.01, 20, 3, key, method, history=zero_lags)
    np.testing.assert_allclose(buffered, plain, rtol=1e-5, atol=1e-6)


# -- the fitted model ----------------------------------------------------------------------------


SMALL = tiny_recording(n_trials=2, n_time=12, n_channels=3, n_inputs=1)


def noisy_prior_path(model, n_bins=30):
    """Integrate the model's prior SDE from X0 with a fixed noise key."""
    fields = model._fields(jnp.zeros((n_bins, model.encoder.output_size)), None)
    path, _ = eqx.filter_jit(model._integrate)(fields, X0, 0.0, BIN_WIDTH, n_bins, jax.random.PRNGKey(2))
    return path


def test_zero_fibre_lengths_equal_network_without_delays(tmp_path):
    delayed = build(delayed_config(tmp_path, lengths=np.zeros((3, 3))))
    plain_config = delayed_config(tmp_path)
    plain_config.model.network.fibre_lengths = None
    plain = build(plain_config)

    assert delayed.sde.drift.delay_line(BIN_WIDTH / N_SUBSTEPS) is None
    np.testing.assert_array_equal(noisy_prior_path(delayed), noisy_prior_path(plain))


def test_checkpointed_segments_keep_delayed_path(tmp_path):
    config = delayed_config(tmp_path)
    segmented_config = config.model_copy(deep=True)
    segmented_config.solver.checkpoint_bins = 7

    path = noisy_prior_path(build(config))
    np.testing.assert_allclose(noisy_prior_path(build(segmented_config)), path, rtol=1e-5, atol=1e-6)
    assert bool(jnp.all(jnp.isfinite(path)))


def test_loss_gradient_in_coupling_matches_finite_differences(tmp_path):
    model = build(delayed_config(tmp_path), n_inputs=1)
    recording = SMALL
    y = np.asarray(recording.y)

    with jax.enable_x64(True):
        model = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, model)
        args = (jnp.asarray(y, jnp.float64), jnp.asarray(recording.u, jnp.float64), jnp.ones(y.shape, jnp.float64),
                0.0, BIN_WIDTH, jax.random.PRNGKey(3))

        @jax.jit
        def loss_at(raw):
            coupled = eqx.tree_at(lambda m: m.sde.drift.global_coupling.raw, model, raw)
            return coupled.loss(*args)[0]

        raw = model.sde.drift.global_coupling.raw
        gradient = jax.grad(loss_at)(raw)
        h = 1e-5
        numeric = (loss_at(raw + h) - loss_at(raw - h)) / (2 * h)

    assert math.isfinite(float(gradient))
    assert abs(float(gradient)) > 1e-3
    assert float(gradient) == pytest.approx(float(numeric), rel=1e-6)


def test_fit_with_delays_from_config_file(tmp_path):
    write_network_files(tmp_path)
    save_npz(tiny_recording(n_trials=10, n_time=12, n_channels=3, n_inputs=1), tmp_path / "data.npz")
    raw = tiny_config().model_dump(mode="json")
    raw["data"].update(source="npz", path="data.npz")
    raw["model"].update(drift="network", latent_size=6, network={
        "local": "stuart_landau", "connectivity": "connectome.npy", "fibre_lengths": "lengths.npy",
        "conduction_speed": 1.0,
    })
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))

    config = load_config(tmp_path / "config.yaml")
    assert config.model.network.fibre_lengths == str((tmp_path / "lengths.npy").resolve())

    run = fit_run(config, tmp_path / "run", quiet=True, steps=3)
    # The speed is learnable by default, so three steps move it away from 1 m/s and the delays follow.
    speed = float(run.model.sde.drift.conduction_speed.value)
    assert speed != 1.0
    np.testing.assert_allclose(run.model.sde.drift.delays, FIBRE_LENGTHS * 1e-3 / speed, rtol=1e-6)
    assert np.isfinite(run.metrics["test"]["model"]["bits_per_spike"])


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lengths", "message"),
    [
        (np.zeros((2, 2)), r"lengths.npy has shape \(2, 2\); expected \(3, 3\)"),
        (np.zeros((3, 3, 1)), r"has shape \(3, 3, 1\); expected \(3, 3\)"),
        (np.where(np.eye(3) == 1, 0.0, -5.0), r"lengths.npy: .* negative or non-finite entries, the first at \[0, 1\]"),
        (np.full((3, 3), np.nan), "negative or non-finite"),
    ],
)
def test_bad_fibre_lengths_rejected(tmp_path, lengths, message):
    with pytest.raises(ConfigError, match=message):
        build(delayed_config(tmp_path, lengths=lengths))


def test_missing_fibre_lengths_file(tmp_path):
    config = delayed_config(tmp_path)
    config.model.network.fibre_lengths = str(tmp_path / "absent.npy")
    with pytest.raises(DataFileError, match="fibre lengths file .*absent.npy not found"):
        build(config)


def test_adaptive_solver_with_delays_rejected(tmp_path):
    raw = delayed_config(tmp_path, diffusion="none").model_dump(mode="json")
    raw["solver"]["method"] = "tsit5"
    with pytest.raises(ConfigError, match="solver.method 'tsit5' cannot integrate conduction delays"):
        parse_config(raw)

    model = build(delayed_config(tmp_path, diffusion="none"))
    with pytest.raises(ConfigError, match="solver method 'dopri5' cannot integrate conduction delays"):
        LatentUDE(model.encoder, model.recognition, SDE(model.sde.drift), model.observation, 6, 4, 8,
                  method="dopri5", key=jax.random.PRNGKey(0))


def test_residual_with_delays_rejected(tmp_path):
    with pytest.raises(ConfigError, match="fibre_lengths is set with model.residual"):
        delayed_config(tmp_path, residual=True)
