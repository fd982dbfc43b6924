"""Checks that a recording suits the configured observation model, run before anything is compiled."""

from __future__ import annotations

import numpy as np

from ..errors import DataError

COUNT_MODELS = ("poisson", "negative_binomial")


def check_binary(recording) -> None:
    """Raise DataError unless every observed entry of `recording.y` is 0 or 1."""
    values = recording.y.ravel() if recording.mask is None else recording.y[recording.mask]
    other = (values != 0) & (values != 1)
    if other.any():
        example = values[np.argmax(other)]
        raise DataError(
            f"y has {int(other.sum())} values that are neither 0 nor 1 (e.g. {example}); the Bernoulli observation "
            "model expects binary bins. Use model.observation 'poisson' or 'negative_binomial' for spike counts."
        )


def check_behaviour(recording, behaviour_configured: bool) -> None:
    """Raise DataError when a behaviour head is configured but the recording has no behaviour."""
    if behaviour_configured and recording.behaviour is None:
        raise DataError(
            "model.behaviour is set, but the recording has no behaviour (Recording.behaviour is None); "
            "add a (trials, time, variables) behaviour array to the recording or remove model.behaviour"
        )


def check_recording(recording, observation: str, behaviour_configured: bool = False) -> None:
    """Raise DataError when `recording` cannot be explained by the observation model named `observation`."""
    if observation in COUNT_MODELS:
        recording.check_counts()
    elif observation == "bernoulli":
        check_binary(recording)
    check_behaviour(recording, behaviour_configured)
