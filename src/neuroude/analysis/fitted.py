"""The prior dynamics of a fitted LatentUDE as plain functions of the state, for the analysis tools.

The analysis reads the prior drift `f(x, u)` and diffusion `sigma(x, u)` of
the process model at a constant drive `u`, the encoder's output for a constant
raw stimulus. The posterior correction is not part of the analysed dynamics,
because it only exists given a recorded trial.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ..errors import ConfigError, NeuroudeError
from ..evaluate import predict_recording
from ..model import LatentUDE
from .fixed_points import Drift, autonomous
from .noise import Diffusion


def prior_drift(model: LatentUDE) -> Drift:
    """Return the prior drift `f(x, u)` of the fitted process model."""
    return autonomous(model.sde.drift)


def prior_diffusion(model: LatentUDE) -> Diffusion:
    """Return the prior diffusion `sigma(x, u)`; zero for an ODE model."""
    if model.sde.is_ode:
        return _zero_diffusion
    return autonomous(model.sde.diffusion)


def _zero_diffusion(x, u):
    return jnp.zeros_like(x)


def encode_constant_input(model: LatentUDE, stimulus, n_inputs: int) -> jax.Array:
    """Pass a constant raw stimulus (n_inputs,) through the model's encoder; return the drive `u` (m,).

    A scalar stimulus is applied to every input channel.
    """
    stimulus = np.asarray(stimulus, np.float32)
    if stimulus.ndim == 0:
        stimulus = np.full((n_inputs,), float(stimulus), np.float32)
    if stimulus.shape != (n_inputs,):
        raise ConfigError(
            f"the stimulus has {stimulus.size} values {stimulus.tolist()}; expected one per input channel ({n_inputs})"
        )
    return model.encode(jnp.asarray(stimulus)[None])[0]


class InputLevelFamily(eqx.Module):
    """`F(x, p)`: the prior drift at the drive encoded from the raw stimulus `p * direction`."""

    model: LatentUDE
    direction: Float[Array, " k"]

    def __call__(self, x: Float[Array, " d"], p: Float[Array, ""]) -> Float[Array, " d"]:
        u = self.model.encode((p * self.direction)[None])[0]
        return self.model.sde.drift(0.0, x, u)


def input_level_family(model: LatentUDE, direction) -> InputLevelFamily:
    """Return `F(x, p)`: the prior drift at the drive encoded from the raw stimulus `p * direction`."""
    return InputLevelFamily(model, jnp.asarray(direction, jnp.float32))


def visited_states(model: LatentUDE, recording, key: PRNGKeyArray, max_trials: int = 8, n_samples: int = 4) -> np.ndarray:
    """Return prior-sampled latent states (N, d) of the first `max_trials` trials, driven by their recorded stimulus."""
    subset = recording.select(np.arange(min(max_trials, recording.n_trials)))
    paths = predict_recording(model, subset, key, n_samples)["paths"]
    states = paths.reshape(-1, paths.shape[-1])
    finite = np.all(np.isfinite(states), axis=1)
    if not np.any(finite):
        raise NeuroudeError("every sampled latent state is non-finite; the fitted prior SDE diverges on this recording")
    return states[finite]
