"""Shared construction of mechanistic models: named constants with defaults, ranges and freezing."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ...errors import ConfigError
from ..parameters import Constant


class ConstantSpec(NamedTuple):
    """Default value, range transform, unit and source of one mechanistic constant."""

    value: float
    transform: str = "positive"
    unit: str = ""
    bounds: tuple[float, float] | None = None


def init_constants(
    module, model_name: str, specs: dict[str, ConstantSpec], frozen: tuple[str, ...], values: dict[str, float]
) -> None:
    """Set one `Constant` field on `module` per entry of `specs`, overridden by `values`.

    Raises ConfigError naming the model and the known constants when `values` or
    `frozen` name a constant the model does not have.
    """
    known = sorted(specs)
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise ConfigError(f"unknown {model_name} constants {unknown}; expected some of {known}")
    bad_frozen = sorted(set(frozen) - set(specs))
    if bad_frozen:
        raise ConfigError(f"frozen names {bad_frozen} are not {model_name} constants {known}")

    for name, spec in specs.items():
        value = values.get(name, spec.value)
        try:
            constant = Constant(value, spec.transform, learnable=name not in frozen, bounds=spec.bounds)
        except ConfigError as error:
            raise ConfigError(f"{model_name} constant {name!r}: {error}") from None
        setattr(module, name, constant)


def input_gain(input_size: int, scale: float = 0.5) -> jax.Array:
    """Return the initial weights that map the encoded input onto the model's drive."""
    return jnp.full((input_size,), scale, dtype=jnp.float32)


def constant_values(module, specs: dict[str, ConstantSpec]) -> dict[str, float]:
    """Return the current physical value of each constant of `module`."""
    return {name: float(getattr(module, name).value) for name in specs}


def check_size_and_key(model_name: str, size, key, unit: str) -> None:
    """Raise ConfigError unless `size` is a positive integer and a key was given to draw the initial arrays."""
    if not isinstance(size, int) or size < 1:
        raise ConfigError(f"{model_name} size is {size!r}; expected a positive integer number of {unit}")
    if key is None:
        raise ConfigError(f"{model_name} key is None; expected a jax.random key to draw the initial arrays")
