"""The process model's prior: an SDE `dx = f(t, x, u) dt + sigma(t, x, u) dW`."""

from __future__ import annotations

import equinox as eqx


class SDE(eqx.Module):
    """Prior dynamics with a drift and a diagonal diffusion.

    `diffusion=None` makes the process an ODE: paths are deterministic given
    `x0` and the objective keeps only the initial-state KL.
    """

    drift: eqx.Module
    diffusion: eqx.Module | None = None

    @property
    def is_ode(self) -> bool:
        return self.diffusion is None
