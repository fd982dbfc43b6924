"""The streamed training loss gives the plain loss and gradients, in memory that grows sub-linearly in the bins."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config, tiny_recording

from neuroude.build import build_model
from neuroude.streaming import can_stream

N_TRIALS = 3


def perturbed(model, scale=0.1):
    """Return `model` with noise added to every parameter, so the posterior correction and its KL are not zero."""
    leaves, tree = jax.tree_util.tree_flatten(model)
    keys = jax.random.split(jax.random.PRNGKey(5), len(leaves))
    noisy = [
        leaf + scale * jax.random.normal(key, leaf.shape, leaf.dtype) if eqx.is_inexact_array(leaf) else leaf
        for leaf, key in zip(leaves, keys)
    ]
    return jax.tree_util.tree_unflatten(tree, noisy)


def model_pair(model_section, solver_section, n_behaviour=0):
    """Build the same perturbed model twice: storing every step, and streamed in segments of 5 bins."""

    def make(**extra):
        config = tiny_config(model=model_section, solver={**solver_section, **extra})
        return perturbed(build_model(config, 3, 1, jax.random.PRNGKey(0), 0.5, n_behaviour=n_behaviour))

    return make(), make(checkpoint_bins=5)


@eqx.filter_jit
def loss_and_grad(model, y, stimulus, mask, behaviour):
    def loss(model):
        return model.loss(y, stimulus, mask, 0.0, 0.01, jax.random.PRNGKey(3), 1.0, 2, behaviour)

    return eqx.filter_value_and_grad(loss, has_aux=True)(model)


# 23 bins in segments of 5: the last segment is padded, and a masked-out count tests the mask.
CASES = {
    "sde-heun-behaviour": (
        {"behaviour": {}, "interpolation": "linear"}, {"method": "heun", "n_substeps": 2}, 2,
    ),
    "sde-window-euler": (
        {"recognition": "window", "recognition_window": 4, "interpolation": "linear"},
        {"method": "euler", "n_substeps": 2},
        0,
    ),
    "ode-greybox-penalty": (
        {"drift": "fitzhugh_nagumo", "residual": True, "residual_penalty": 0.1, "observed_states": "model",
         "diffusion": "none"},
        {"method": "euler", "n_substeps": 2},
        0,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_streamed_loss_and_gradients_match_plain(case):
    model_section, solver_section, n_behaviour = CASES[case]
    plain, streamed = model_pair(model_section, solver_section, n_behaviour)
    assert can_stream(streamed)
    assert not can_stream(plain)

    recording = tiny_recording(n_trials=N_TRIALS, n_time=23)
    y = jnp.asarray(recording.y, jnp.float32)
    stimulus = jnp.asarray(recording.u, jnp.float32)
    mask = jnp.ones_like(y).at[0, 3, 1].set(0.0)
    behaviour = jax.random.normal(jax.random.PRNGKey(9), (N_TRIALS, 23, n_behaviour)) if n_behaviour else None

    (plain_loss, plain_terms), plain_grads = loss_and_grad(plain, y, stimulus, mask, behaviour)
    (loss, terms), grads = loss_and_grad(streamed, y, stimulus, mask, behaviour)

    assert set(terms) == set(plain_terms)
    assert float(plain_terms["log_likelihood"]) < 0.0
    if model_section.get("diffusion") == "none":
        assert float(plain_terms["residual_penalty"]) > 0.0
    else:
        assert float(plain_terms["kl_path"]) > 0.0
    for name, value in plain_terms.items():
        np.testing.assert_allclose(terms[name], value, rtol=2e-5, atol=1e-6, err_msg=name)
    assert float(loss) == pytest.approx(float(plain_loss), rel=2e-5)

    plain_leaves = jax.tree_util.tree_leaves(plain_grads)
    assert any(float(jnp.max(jnp.abs(leaf))) > 0 for leaf in plain_leaves)
    for a, b in zip(plain_leaves, jax.tree_util.tree_leaves(grads)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(a)) + 1e-3))


def test_streamed_adaptive_ode_loss_matches_plain():
    # tests/test_solve.py compares the gradients of adaptive segments; this checks the model streams them.
    plain, streamed = model_pair({"diffusion": "none"}, {"method": "tsit5", "rtol": 1e-7, "atol": 1e-9})
    assert can_stream(streamed)

    recording = tiny_recording(n_trials=N_TRIALS, n_time=23)
    y = jnp.asarray(recording.y, jnp.float32)
    stimulus = jnp.asarray(recording.u, jnp.float32)
    mask = jnp.ones_like(y).at[0, 3, 1].set(0.0)
    plain_terms = ode_loss_terms(plain, y, stimulus, mask)
    terms = ode_loss_terms(streamed, y, stimulus, mask)

    assert float(plain_terms["log_likelihood"]) < 0.0
    np.testing.assert_allclose(terms["log_likelihood"], plain_terms["log_likelihood"], rtol=1e-5)
    np.testing.assert_allclose(terms["state_peak"], plain_terms["state_peak"], rtol=1e-5)


@eqx.filter_jit
def ode_loss_terms(model, y, stimulus, mask):
    return model.loss(y, stimulus, mask, 0.0, 0.01, jax.random.PRNGKey(3), 1.0, 1)[1]


def temp_bytes(checkpoint_bins: int, n_bins: int, model_section: dict | None = None) -> int:
    """Return XLA's temporary buffer size of the compiled loss gradient for 4 trials of `n_bins` bins."""
    config = tiny_config(model=model_section or {}, solver={"checkpoint_bins": checkpoint_bins})
    model = build_model(config, 3, 1, jax.random.PRNGKey(0), 0.5)
    y = jnp.ones((4, n_bins, 3))
    arguments = (model, y, jnp.zeros((4, n_bins, 1)), jnp.ones_like(y), None)
    compiled = loss_and_grad.lower(*arguments).compile().compiled
    return compiled.memory_analysis().temp_size_in_bytes


def test_streamed_gradient_memory_grows_sublinearly():
    # With segments of sqrt(bins) bins, 4 times the bins need about twice the memory (1.8 measured).
    # Storing every step needs 4 times the memory, and at 1024 bins 26 times the streamed figure.
    streamed = temp_bytes(32, 1024)

    assert streamed / temp_bytes(16, 256) < 2.5
    assert temp_bytes(0, 1024) > 10 * streamed


def test_window_segments_memory_nearly_flat():
    # With the window model a segment needs nothing from the segments after it, so the backward pass
    # stores one latent state per segment (64 bytes for 4 trials, 2 samples, 2 latents) and nothing per bin.
    window = {"recognition": "window", "recognition_window": 4}
    short, long = temp_bytes(16, 64, window), temp_bytes(16, 4096, window)
    extra_segments = (4096 - 64) // 16
    state_bytes = 4 * 2 * tiny_config().model.latent_size * 4

    assert long - short <= 2 * extra_segments * state_bytes
    assert long < 1.2 * short
