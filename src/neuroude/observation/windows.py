"""Observation likelihoods over a window of bins, with the observation model's state carried from window to window.

A time-separable observation model (`time_separable = True`) has a log
likelihood that is a sum over bins, so a window's sum needs no state. Models
whose expected value at a bin depends on earlier bins (calcium, BOLD) define

    start_state(x_first) -> state            the state before the trial's first bin
    window_log_prob(state, y, x, mask) -> (state, log_prob)

and their `log_prob` over a whole trial equals the sum of `window_log_prob`
over consecutive windows that start from `start_state(x[0])`. The functions
here give every observation model that interface. Time-separable models carry
the empty state `()`.
"""

from __future__ import annotations

from jaxtyping import Array, Float


def can_run_windows(observation) -> bool:
    """Return True when `observation`'s log likelihood can be computed window by window.

    A model that groups others (`GroupedObservation`) sets `windowed` to whether all its members can.
    """
    if getattr(observation, "time_separable", False):
        return True
    return hasattr(observation, "window_log_prob") and getattr(observation, "windowed", True)


def start_state(observation, x_first: Float[Array, " d"]):
    """Return `observation`'s state before the first bin, whose latent state is `x_first`; `()` if it has none."""
    if hasattr(observation, "window_log_prob"):
        return observation.start_state(x_first)
    return ()


def window_log_prob(
    observation, state, y: Float[Array, "L n"], x: Float[Array, "L d"], mask: Float[Array, "L n"]
) -> tuple[object, Float[Array, ""]]:
    """Return `observation`'s state after the window's bins and their log likelihood, starting from `state`."""
    if hasattr(observation, "window_log_prob"):
        return observation.window_log_prob(state, y, x, mask)
    if not getattr(observation, "time_separable", False):
        raise TypeError(
            f"{type(observation).__name__} is neither time-separable nor defines window_log_prob, "
            "so its log likelihood cannot be computed window by window"
        )
    return state, observation.log_prob(y, x, mask)
