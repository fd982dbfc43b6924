"""Checks that a recording suits the configured observation model, run before anything is compiled."""

from __future__ import annotations

import logging

import numpy as np

from ..data.recording import Recording
from ..errors import DataError

COUNT_MODELS = ("poisson", "negative_binomial")

# Standard deviations of a behaviour variable outside this range get a warning. The behaviour head
# starts at unit noise scale and a readout of order one, so variables far from unit scale make the
# early log-likelihood huge (it can overflow) or negligible next to the neural one.
BEHAVIOUR_STD_RANGE = (0.01, 100.0)
# Largest |value| of a behaviour variable without a warning: rare large values (tracking glitches
# in a speed, for example) leave the standard deviation moderate but give huge early residuals.
BEHAVIOUR_MAX_ABS = 1000.0

logger = logging.getLogger("neuroude")


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


def warn_behaviour_scale(behaviour: np.ndarray, observed: np.ndarray, names=None) -> list[str]:
    """Log a warning for each behaviour variable whose standard deviation is outside `BEHAVIOUR_STD_RANGE`
    or whose largest absolute value is above `BEHAVIOUR_MAX_ABS`.

    `behaviour` and `observed` are (trials, time, b) arrays of the training trials. Returns the
    warnings logged, one per variable.
    """
    low, high = BEHAVIOUR_STD_RANGE
    warnings = []
    for index in range(behaviour.shape[-1]):
        values = np.asarray(behaviour[..., index], np.float64)[np.asarray(observed[..., index], bool)]
        if values.size < 2:
            continue
        std = float(np.std(values))
        largest = float(np.max(np.abs(values)))
        if low <= std <= high and largest <= BEHAVIOUR_MAX_ABS:
            continue
        name = names[index] if names is not None and index < len(names) else f"variable {index}"
        message = (
            f"behaviour {name} has standard deviation {std:.4g} and largest absolute value {largest:.4g} on the "
            f"training trials; expected a standard deviation in [{low:g}, {high:g}] and values within "
            f"±{BEHAVIOUR_MAX_ABS:g}. The behaviour head fits it on this raw scale, which can make the loss overflow "
            "or let behaviour dominate or vanish from it. Set model.behaviour.standardize: true, which fits it "
            "minus its mean and divided by its standard deviation, or convert it to other units before fitting."
        )
        logger.warning(message)
        warnings.append(message)
    return warnings


def check_recording(recording, observation: str, behaviour_configured: bool = False, channel_groups=()) -> None:
    """Raise DataError when `recording` cannot be explained by the observation model named `observation`.

    For observation 'grouped', each of `channel_groups` (items with `observation` and `channels`)
    is checked on its own channels.
    """
    if observation == "grouped":
        for group in channel_groups:
            _check_group(recording, group.observation, list(group.channels))
    elif observation in COUNT_MODELS:
        recording.check_counts()
    elif observation == "bernoulli":
        check_binary(recording)
    check_behaviour(recording, behaviour_configured)


def _check_group(recording, observation: str, channels: list[int]) -> None:
    out_of_range = [index for index in channels if not 0 <= index < recording.n_channels]
    if out_of_range:
        raise DataError(
            f"model.channel_groups lists channels {out_of_range}; the recording has channels 0 to {recording.n_channels - 1}"
        )
    mask = None if recording.mask is None else recording.mask[:, :, channels]
    subset = Recording(y=recording.y[:, :, channels], ts=recording.ts, mask=mask)
    try:
        check_recording(subset, observation)
    except DataError as error:
        raise DataError(f"channels {channels} ({observation} group): {error}") from None
