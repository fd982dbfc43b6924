"""Conversion between the Ito and the Stratonovich reading of a diagonal-noise SDE.

For diagonal noise `sigma(t, x, u)`, the Ito SDE `dx = f dt + sigma dW` and the
Stratonovich SDE `dx = f_S dt + sigma o dW` have the same solutions when

    f_S,i(x) = f_i(x) - 0.5 * sigma_i(x) * d sigma_i / d x_i (x)

Only the diagonal of the Jacobian of sigma enters, because the noise of state i
is driven by the Brownian motion W_i alone. Euler-Maruyama converges to the Ito
solution and Heun to the Stratonovich one, so an Ito model is integrated with
Heun through `ito_to_stratonovich_drift`, and a Stratonovich model with
Euler-Maruyama through `stratonovich_to_ito_drift`. The correction is 0 when
sigma does not depend on x, for example for additive noise.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..errors import ConfigError

CALCULI = ("ito", "stratonovich")


def ito_stratonovich_correction(
    diffusion: eqx.Module, t, x: Float[Array, " d"], u: Float[Array, " m"]
) -> Float[Array, " d"]:
    """Compute `c_i = 0.5 * sigma_i(x) * d sigma_i / d x_i`, so that `f_S = f - c` and `f = f_S + c`.

    The diagonal of the Jacobian is taken in forward mode (`jax.linearize`),
    with one tangent per state batched by `vmap`. So a sigma_i that also depends
    on other states x_j is handled exactly, at about d times the cost of sigma.
    """

    def sigma(state):
        return diffusion(t, state, u)

    scale, tangent_map = jax.linearize(sigma, x)
    jacobian_columns = jax.vmap(tangent_map)(jnp.eye(x.shape[0], dtype=x.dtype))
    # jacobian_columns[j, i] = d sigma_i / d x_j.
    return 0.5 * scale * jnp.diagonal(jacobian_columns)


class ConvertedDrift(eqx.Module):
    """Drift of the same diagonal-noise SDE read in the other calculus: `f -/+ 0.5 * sigma_i * d sigma_i / d x_i`.

    `source` is the calculus `drift` was written in. From "ito" the correction
    is subtracted, giving the Stratonovich drift, and from "stratonovich" it is
    added, giving the Ito drift. A PyTree, so gradients reach the parameters of
    both `drift` and `diffusion`.
    """

    drift: eqx.Module
    diffusion: eqx.Module
    source: str = eqx.field(static=True)

    def __check_init__(self):
        if self.source not in CALCULI:
            raise ConfigError(f"source calculus is {self.source!r}; expected one of {CALCULI}")

    def __call__(self, t, x: Float[Array, " d"], u: Float[Array, " m"]) -> Float[Array, " d"]:
        correction = ito_stratonovich_correction(self.diffusion, t, x, u)
        if self.source == "ito":
            return self.drift(t, x, u) - correction
        return self.drift(t, x, u) + correction


def ito_to_stratonovich_drift(drift: eqx.Module, diffusion: eqx.Module) -> ConvertedDrift:
    """Return the Stratonovich drift `f - 0.5 * sigma_i * d sigma_i / d x_i` of the Ito SDE `dx = f dt + sigma dW`.

    Heun on the returned drift converges to the Ito solution of `drift`.
    """
    return ConvertedDrift(drift, diffusion, "ito")


def stratonovich_to_ito_drift(drift: eqx.Module, diffusion: eqx.Module) -> ConvertedDrift:
    """Return the Ito drift `f_S + 0.5 * sigma_i * d sigma_i / d x_i` of the Stratonovich SDE `dx = f_S dt + sigma o dW`.

    Euler-Maruyama on the returned drift converges to the Stratonovich solution of `drift`.
    """
    return ConvertedDrift(drift, diffusion, "stratonovich")
