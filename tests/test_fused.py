"""The fused training loss (reversible Heun, window recognition) equals the plain one, in memory flat in the bins."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config, tiny_recording
from test_streaming import perturbed

import neuroude.model
from neuroude.build import build_model
from neuroude.dynamics import trainable_filter
from neuroude.errors import ConfigError
from neuroude.fused import can_fuse, fusion_warning
from neuroude.recognition import WindowRecognition
from neuroude.train import make_optimizer, make_train_step

N_TRIALS, N_BINS = 3, 23

# A slow drift, so that reversible Heun's parasitic mode stays small over the trial.
CASES = {
    "sde-window-behaviour": (
        {"recognition": "window", "recognition_window": 4, "behaviour": {}, "interpolation": "linear",
         "drift_time_constant": 0.5},
        2,
    ),
    "sde-window-gaussian-hold": (
        {"recognition": "window", "recognition_window": 1, "observation": "gaussian", "interpolation": "hold",
         "drift_time_constant": 0.5, "encoder": "linear"},
        0,
    ),
    "ode-gru": ({"diffusion": "none", "drift_time_constant": 0.5}, 0),
}


def build(model_section, n_behaviour=0, **solver):
    config = tiny_config(model=model_section, solver={"method": "reversible_heun", "n_substeps": 2, **solver})
    return perturbed(build_model(config, 3, 1, jax.random.PRNGKey(0), 0.5, n_behaviour=n_behaviour))


def loss_and_grad_function():
    # A new function per call, so that jit's cache cannot hand the fused program to the plain run.
    def loss_and_grad(model, y, stimulus, mask, behaviour):
        def loss(model):
            return model.loss(y, stimulus, mask, 0.0, 0.01, jax.random.PRNGKey(3), 1.0, 2, behaviour)

        return eqx.filter_value_and_grad(loss, has_aux=True)(model)

    return eqx.filter_jit(loss_and_grad)


def trial_arrays(n_behaviour):
    recording = tiny_recording(n_trials=N_TRIALS, n_time=N_BINS)
    y = jnp.asarray(recording.y, jnp.float32)
    stimulus = jnp.asarray(recording.u, jnp.float32)
    mask = jnp.ones_like(y).at[0, 3, 1].set(0.0)
    behaviour = jax.random.normal(jax.random.PRNGKey(9), (N_TRIALS, N_BINS, n_behaviour)) if n_behaviour else None
    return y, stimulus, mask, behaviour


@pytest.mark.parametrize("case", sorted(CASES))
def test_fused_loss_matches_plain(case, monkeypatch):
    model_section, n_behaviour = CASES[case]
    model = build(model_section, n_behaviour)
    assert can_fuse(model)
    arrays = trial_arrays(n_behaviour)

    (loss, terms), grads = loss_and_grad_function()(model, *arrays)
    monkeypatch.setattr(neuroude.model, "can_fuse", lambda model: False)
    (plain_loss, plain_terms), plain_grads = loss_and_grad_function()(model, *arrays)

    assert "state_peak_bin" in terms
    assert "state_peak_bin" not in plain_terms
    assert float(plain_terms["log_likelihood"]) < 0.0
    if model.sde.is_ode:
        assert float(plain_terms["kl_path"]) == 0.0
    else:
        assert float(plain_terms["kl_path"]) > 0.0
    for name in set(plain_terms) - {"state_peak"}:
        np.testing.assert_allclose(terms[name], plain_terms[name], rtol=2e-5, err_msg=name)
    np.testing.assert_allclose(loss, plain_loss, rtol=2e-5)

    # One peak per trial: the largest |x| of the plain path's bins, at the bin the plain path reaches it.
    np.testing.assert_allclose(terms["state_peak"][:, 0], jnp.max(plain_terms["state_peak"], axis=1), rtol=1e-5)
    np.testing.assert_array_equal(terms["state_peak_bin"][:, 0], jnp.argmax(plain_terms["state_peak"], axis=1))

    plain_leaves = jax.tree_util.tree_leaves(plain_grads)
    assert any(float(jnp.max(jnp.abs(leaf))) > 0 for leaf in plain_leaves)
    for a, b in zip(plain_leaves, jax.tree_util.tree_leaves(grads)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(a)) + 1e-3))


def test_window_context_reads_its_window():
    recognition = WindowRecognition(3, 1, 2, hidden_size=8, context_size=4, n_init_bins=3, window_bins=5,
                                    key=jax.random.PRNGKey(0))
    features = jax.random.normal(jax.random.PRNGKey(1), (12, 4))
    context = recognition.context(features[:, :3], features[:, 3:])

    padded = jnp.concatenate([features, jnp.zeros((4, 4))])
    for k in range(12):
        np.testing.assert_allclose(context[k], recognition.context_at(padded[k : k + 5]), rtol=1e-5, atol=1e-6)

    # Changing bin 9 changes the contexts of bins 5 to 9 and no other.
    changed = recognition.context(features.at[9, 0].add(1.0)[:, :3], features[:, 3:])
    differs = np.any(np.asarray(changed != context), axis=1)
    np.testing.assert_array_equal(np.flatnonzero(differs), np.arange(5, 10))


def test_window_initial_state_pads_trials():
    recognition = WindowRecognition(3, 0, 2, hidden_size=8, context_size=4, n_init_bins=6, window_bins=2,
                                    key=jax.random.PRNGKey(0))
    y = jax.random.normal(jax.random.PRNGKey(1), (4, 3))
    mean, std = recognition.initial_state(y, jnp.zeros((4, 0)))
    padded_mean, _ = recognition.initial_state(jnp.concatenate([y, jnp.zeros((2, 3))]), jnp.zeros((6, 0)))
    np.testing.assert_allclose(mean, padded_mean, rtol=1e-6)
    assert mean.shape == (2,)
    assert std.shape == (2,)
    assert bool(jnp.all(std > 0))


def step_temp_bytes(recognition: str, n_bins: int) -> int:
    """Return XLA's temporary buffer size of a compiled training step on 4 trials of `n_bins` bins."""
    config = tiny_config(
        model={"recognition": recognition, "recognition_window": 4, "drift_time_constant": 0.5},
        solver={"method": "reversible_heun"},
    )
    model = build_model(config, 3, 1, jax.random.PRNGKey(0), 0.5)
    params, static = eqx.partition(model, trainable_filter(model))
    optimizer = make_optimizer(config.training)
    step = make_train_step(static, optimizer, t0=0.0, bin_width=0.01, n_samples=1)
    y = jnp.zeros((4, n_bins, 3))
    arguments = (params, optimizer.init(params), y, jnp.zeros((4, n_bins, 1)), jnp.ones_like(y),
                 jax.random.PRNGKey(2), jnp.float32(1.0))
    return step.lower(*arguments).compile().compiled.memory_analysis().temp_size_in_bytes


def test_fused_step_memory_is_flat():
    fused_short, fused_long = step_temp_bytes("window", 64), step_temp_bytes("window", 4096)
    # The GRU's context and the path are stored for the backward pass, so its step grows with the bins.
    gru_long = step_temp_bytes("gru", 1024)

    assert fused_long <= 1.05 * fused_short
    assert gru_long > 5 * fused_long


def test_bound_names_fused_peak_bin():
    model = build({"recognition": "window", "recognition_window": 4, "drift_time_constant": 0.5})
    params, static = eqx.partition(model, trainable_filter(model))
    optimizer = make_optimizer(tiny_config().training)
    step = make_train_step(static, optimizer, 0.0, 0.01, 1, max_state=1e-3)
    y, stimulus, mask, _ = trial_arrays(0)
    _, _, terms, finite, _ = step(params, optimizer.init(params), y, stimulus, mask, jax.random.PRNGKey(0),
                                  jnp.float32(1.0), lr_scale=jnp.float32(1.0))

    assert bool(terms["state_bound_exceeded"])
    assert not bool(finite)
    # Every trial's peak exceeds 1e-3, so the first trial is named, at the bin of its largest |x|.
    _, loss_terms = model.loss(y, stimulus, mask, 0.0, 0.01, jax.random.PRNGKey(0), 1.0, 1)
    assert int(terms["bound_trial"]) == 0
    assert int(terms["bound_bin"]) == int(loss_terms["state_peak_bin"][0, 0])


def test_fusion_warning_names_obstacles():
    window = {"recognition": "window", "drift_time_constant": 0.5}
    calcium = build_model(
        tiny_config(model={**window, "observation": "calcium"}, solver={"method": "reversible_heun"}),
        3, 1, jax.random.PRNGKey(0), 0.5, bin_width=0.01,
    )
    fused = build(window)

    assert fusion_warning(fused) is None
    assert fusion_warning(build({"drift_time_constant": 0.5})) is None
    assert "CalciumObservation" in fusion_warning(calcium)
    assert "shooting_bins" in fusion_warning(fused, shooting=True)


def test_heldout_elbo_takes_array_start_time():
    # `compare` passes the trial's start time as a JAX array. The solver's step settings must not be static then.
    import warnings

    from neuroude.compare import heldout_elbo

    model = build({"recognition": "window", "drift_time_constant": 0.5})
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        elbo = heldout_elbo(model, tiny_recording(), [0, 1], 2, 0)
    assert np.isfinite(elbo)


def test_window_longer_than_trials_rejected():
    from neuroude.workflow import _check_trial_length

    recording = tiny_recording(n_time=12)
    config = tiny_config(model={"recognition": "window", "recognition_window": 50})

    with pytest.raises(ConfigError, match="recognition_window is 50 bins, but the trials have 12 bins"):
        _check_trial_length(recording, config)
    # The GRU ignores the window setting.
    _check_trial_length(recording, tiny_config(model={"recognition_window": 50}))


def test_segment_longer_than_trials_warns():
    from neuroude.workflow import _segment_warning

    assert "stores every step" in _segment_warning(tiny_config(solver={"checkpoint_bins": 12}), 12)
    assert _segment_warning(tiny_config(solver={"checkpoint_bins": 11}), 12) is None
    assert _segment_warning(tiny_config(), 12) is None
