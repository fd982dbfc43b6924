"""Mechanistic constants that are kept in their valid range and can be learned or frozen.

A `Constant` stores an unconstrained raw value `r` and returns `value = T(r)`,
where `T` maps the real line onto the valid range: softplus (plus 1e-8) for
positive constants, a scaled logistic for bounded ones, the identity for free ones.
Frozen constants are excluded from the optimiser by `trainable_filter` and
also stopped in the gradient, so weight decay cannot move them either.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..errors import ConfigError

TRANSFORMS = ("positive", "bounded", "real")

# Added to softplus so a positive constant cannot underflow to exactly 0 in float32.
POSITIVE_FLOOR = 1e-8


def _inverse_softplus(value: float) -> float:
    # log(expm1(v)) loses precision for large v, where softplus is the identity.
    return value if value > 20.0 else math.log(math.expm1(value))


class Constant(eqx.Module):
    """One named mechanistic constant with a range constraint.

    Parameters
    ----------
    value : the initial (physical) value.
    transform : "positive" (softplus), "bounded" (within `bounds`) or "real".
    learnable : False keeps the constant fixed during fitting.
    bounds : (lower, upper) for a bounded constant.
    """

    raw: Float[Array, ""]
    transform: str = eqx.field(static=True)
    learnable: bool = eqx.field(static=True)
    bounds: tuple[float, float] | None = eqx.field(static=True)

    def __init__(
        self,
        value: float,
        transform: str = "positive",
        learnable: bool = True,
        bounds: tuple[float, float] | None = None,
    ):
        value = float(value)
        if transform not in TRANSFORMS:
            raise ConfigError(f"transform is {transform!r}; expected one of {TRANSFORMS}")
        if not math.isfinite(value):
            raise ConfigError(f"constant value is {value}; expected a finite number")

        if transform == "positive":
            if value <= 0:
                raise ConfigError(f"a positive constant got value {value}; expected a value > 0")
            raw = _inverse_softplus(value - POSITIVE_FLOOR)
        elif transform == "bounded":
            if bounds is None or not bounds[0] < bounds[1]:
                raise ConfigError(f"bounds are {bounds}; expected (lower, upper) with lower < upper")
            lower, upper = bounds
            if not lower < value < upper:
                raise ConfigError(f"bounded constant got value {value}; expected a value strictly inside {bounds}")
            fraction = (value - lower) / (upper - lower)
            raw = math.log(fraction / (1.0 - fraction))
        else:
            raw = value

        self.raw = jnp.asarray(raw, dtype=jnp.float32)
        self.transform = transform
        self.learnable = bool(learnable)
        self.bounds = None if bounds is None else (float(bounds[0]), float(bounds[1]))

    @property
    def value(self) -> Float[Array, ""]:
        raw = self.raw if self.learnable else jax.lax.stop_gradient(self.raw)
        if self.transform == "positive":
            return jax.nn.softplus(raw) + POSITIVE_FLOOR
        if self.transform == "bounded":
            lower, upper = self.bounds
            return lower + (upper - lower) * jax.nn.sigmoid(raw)
        return raw


def trainable_filter(model) -> object:
    """Return a PyTree of booleans marking the leaves the optimiser may change.

    Floating-point arrays are trainable, except the raw value of a frozen
    `Constant`.
    """

    def mark(node):
        if isinstance(node, Constant):
            return eqx.tree_at(lambda constant: constant.raw, node, node.learnable)
        return eqx.is_inexact_array(node)

    return jax.tree_util.tree_map(mark, model, is_leaf=lambda node: isinstance(node, Constant))
