"""Streaming with every observation model: window sums, streamed-versus-plain gradients, and memory in the bins."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config, tiny_recording

from neuroude.build import build_model
from neuroude.observation import (
    BernoulliObservation,
    BoldObservation,
    CalciumObservation,
    GaussianObservation,
    GroupedObservation,
    NegativeBinomialObservation,
    PoissonObservation,
)
from neuroude.observation.windows import can_run_windows, start_state, window_log_prob
from neuroude.streaming import can_stream

BIN_WIDTH = 0.01
N_TRIALS = 2
N_BINS = 23
SEGMENT = 5
# One channel per observation model that streaming did not accept before. Channel 3 contains binary data.
GROUPS = [
    {"observation": "calcium", "channels": [0]},
    {"observation": "bold", "channels": [1]},
    {"observation": "negative_binomial", "channels": [2]},
    {"observation": "bernoulli", "channels": [3]},
]


def grouped_section(groups):
    """Return the model section of an ODE read through `groups`, with one Runge-Kutta step per BOLD bin."""
    return {
        "observation": "grouped", "channel_groups": groups, "diffusion": "none",
        "observation_settings": {"bold_substeps": 1},
    }


def observation_models():
    """Return one of each observation model, reading 2 latent states into 3 channels (10 for the grouped one)."""
    keys = jax.random.split(jax.random.PRNGKey(0), 8)
    models = {
        "poisson": PoissonObservation(2, 3, key=keys[0]),
        "gaussian": GaussianObservation(2, 3, key=keys[1]),
        "negative_binomial": NegativeBinomialObservation(2, 3, key=keys[2]),
        "bernoulli": BernoulliObservation(2, 3, key=keys[3]),
        "calcium": CalciumObservation(2, 3, BIN_WIDTH, decay_time=0.05, key=keys[4]),
        "bold": BoldObservation(2, 3, bin_width=0.5, n_substeps=2, key=keys[5]),
    }
    members = [models["calcium"], models["bold"], models["negative_binomial"], BernoulliObservation(2, 1, key=keys[6])]
    models["grouped"] = GroupedObservation(members, [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]], 10)
    return models


@eqx.filter_jit
def window_sum_and_log_prob(observation, y, x, mask):
    """Return the summed log likelihoods of three consecutive windows of bins, and `log_prob` of all bins at once."""
    state = start_state(observation, x[0])
    total = jnp.zeros(())
    for first, last in [(0, 4), (4, 9), (9, 11)]:
        state, value = window_log_prob(observation, state, y[first:last], x[first:last], mask[first:last])
        total = total + value
    return total, observation.log_prob(y, x, mask)


@pytest.mark.parametrize("name", sorted(observation_models()))
def test_window_sums_equal_log_prob(name):
    observation = observation_models()[name]
    n_channels = observation.mean(jnp.zeros((1, 2))).shape[1]
    x = jax.random.normal(jax.random.PRNGKey(1), (11, 2))
    y = jax.random.bernoulli(jax.random.PRNGKey(2), 0.4, (11, n_channels)).astype(jnp.float32)
    mask = jnp.ones_like(y).at[5, 0].set(0.0)

    total, whole = window_sum_and_log_prob(observation, y, x, mask)

    assert can_run_windows(observation)
    assert float(total) == pytest.approx(float(whole), rel=1e-5)


@eqx.filter_jit
def log_probs_from_carried_and_rest(observation, y, x):
    """Run two windows over `x`; return the second's log likelihood from the carried state and from the start state."""
    mask = jnp.ones_like(y)
    rest = start_state(observation, x[0])
    carried, _ = window_log_prob(observation, rest, y, x, mask)
    return window_log_prob(observation, carried, y, x, mask)[1], window_log_prob(observation, rest, y, x, mask)[1]


@pytest.mark.parametrize("name", ["calcium", "bold"])
def test_windows_carry_state(name):
    observation = observation_models()[name]
    x = jnp.linspace(-1.0, 2.0, 12).reshape(6, 2)
    from_carried, from_rest = log_probs_from_carried_and_rest(observation, jnp.zeros((6, 3)), x)

    # The state at a window's start changes its log likelihood, so a segment that dropped it would be caught.
    assert abs(float(from_carried) - float(from_rest)) > 1e-3


def perturbed(model, scale=0.1):
    """Return `model` with noise added to every parameter, so that no gradient is zero by construction."""
    leaves, tree = jax.tree_util.tree_flatten(model)
    keys = jax.random.split(jax.random.PRNGKey(5), len(leaves))
    noisy = [
        leaf + scale * jax.random.normal(key, leaf.shape, leaf.dtype) if eqx.is_inexact_array(leaf) else leaf
        for leaf, key in zip(leaves, keys)
    ]
    return jax.tree_util.tree_unflatten(tree, noisy)


def build(model_section, n_channels, **solver):
    config = tiny_config(model=model_section, solver={"n_substeps": 1, **solver})
    return build_model(config, n_channels, 1, jax.random.PRNGKey(0), 0.5, bin_width=BIN_WIDTH)


@eqx.filter_jit
def loss_and_grad(model, y, stimulus, mask):
    def loss(model):
        return model.loss(y, stimulus, mask, 0.0, BIN_WIDTH, jax.random.PRNGKey(3), 1.0, 2)

    return eqx.filter_value_and_grad(loss, has_aux=True)(model)


def recording_arrays():
    """Return counts for `GROUPS` (binary in channel 3), a stimulus, and a mask with one entry off."""
    recording = tiny_recording(n_trials=N_TRIALS, n_time=N_BINS, n_channels=4)
    y = jnp.asarray(recording.y, jnp.float32)
    y = y.at[..., 3].set(jnp.minimum(y[..., 3], 1.0))
    mask = jnp.ones_like(y).at[0, 7, 0].set(0.0)
    return y, jnp.asarray(recording.u, jnp.float32), mask


def as_float64(tree):
    return jax.tree_util.tree_map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, tree)


def test_streamed_observations_match_plain():
    # 23 bins in segments of 5: the carried states cross four segment edges and the last segment is padded.
    # In float64, because in float32 the negative binomial's dispersion gradient (a difference of digammas
    # summed over bins) differed by 3e-3 relative between the two orders of summation.
    with jax.enable_x64(True):
        plain = as_float64(perturbed(build(grouped_section(GROUPS), 4)))
        streamed = as_float64(perturbed(build(grouped_section(GROUPS), 4, checkpoint_bins=SEGMENT)))
        y, stimulus, mask = as_float64(recording_arrays())
        (plain_loss, plain_terms), plain_grads = loss_and_grad(plain, y, stimulus, mask)
        (loss, terms), grads = loss_and_grad(streamed, y, stimulus, mask)
    plain_terms, terms, plain_grads, grads = jax.tree_util.tree_map(np.asarray, (plain_terms, terms, plain_grads, grads))

    assert can_stream(streamed)
    assert plain_terms["log_likelihood"] < 0.0
    for term in ("log_likelihood", "kl_initial", "kl_path"):
        np.testing.assert_allclose(terms[term], plain_terms[term], rtol=1e-10, err_msg=term)
    assert float(loss) == pytest.approx(float(plain_loss), rel=1e-10)

    observation_grads = jax.tree_util.tree_leaves(plain_grads.observation)
    assert all(np.max(np.abs(leaf)) > 0 for leaf in observation_grads)
    for a, b in zip(jax.tree_util.tree_leaves(plain_grads), jax.tree_util.tree_leaves(grads)):
        np.testing.assert_allclose(b, a, rtol=1e-8, atol=1e-12)


def temp_bytes(checkpoint_bins: int, n_bins: int) -> int:
    """Return XLA's temporary buffer size of the compiled loss gradient for 4 trials of `n_bins` bins.

    The model reads calcium from channel 0 and BOLD from channel 1, so both carried states cross every segment edge.
    """
    model = build(grouped_section(GROUPS[:2]), 2, checkpoint_bins=checkpoint_bins)
    assert can_stream(model)
    y = jnp.ones((4, n_bins, 2))
    arguments = (model, y, jnp.zeros((4, n_bins, 1)), jnp.ones_like(y))
    compiled = loss_and_grad.lower(*arguments).compile().compiled
    return compiled.memory_analysis().temp_size_in_bytes


def test_streamed_calcium_bold_memory_sublinear():
    # With segments of sqrt(bins) bins, 4 times the bins need about twice the memory. Storing every bin needs 4 times.
    assert temp_bytes(32, 1024) / temp_bytes(16, 256) < 2.5
