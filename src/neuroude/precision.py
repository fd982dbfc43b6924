"""Floating-point precision of a fit: float32 by default, float64 for stiff models.

JAX computes in float32 unless its 64-bit mode (`jax_enable_x64`) is on. The
library never turns that mode on. The `neuroude` command turns it on at the
start of a run whose `training.precision` is `float64`, and Python callers turn
it on themselves, for example with `with jax.enable_x64(True):` around the fit
(JAX 0.10) or `JAX_ENABLE_X64=1` in the environment.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .errors import ConfigError

PRECISIONS = {"float32": jnp.float32, "float64": jnp.float64}


def precision_dtype(precision: str):
    """Return the JAX dtype of `precision`; raise ConfigError when float64 is requested with 64-bit mode off."""
    if precision not in PRECISIONS:
        raise ConfigError(f"training.precision is {precision!r}; expected one of {sorted(PRECISIONS)}")
    if precision == "float64" and not x64_enabled():
        raise ConfigError(
            "training.precision is 'float64', but JAX's 64-bit mode is off, so every array would stay float32. "
            "Run the fit with `neuroude fit`, which turns the mode on, or in Python inside "
            "`with jax.enable_x64(True):` or with JAX_ENABLE_X64=1 set"
        )
    return PRECISIONS[precision]


def x64_enabled() -> bool:
    """Return True when JAX's 64-bit mode is on here, globally or inside a `jax.enable_x64` context."""
    # The canonical dtype follows the global flag and the context alike.
    return jax.dtypes.canonicalize_dtype(jnp.float64) == jnp.float64


def cast_floating(tree, dtype):
    """Return `tree` with every floating-point array converted to `dtype`; other leaves are unchanged."""

    def cast(leaf):
        if eqx.is_array(leaf) and jnp.issubdtype(leaf.dtype, jnp.floating):
            return leaf.astype(dtype)
        return leaf

    return jax.tree_util.tree_map(cast, tree)


def enable_requested_precision(precision: str) -> None:
    """Turn on JAX's 64-bit mode for the rest of the process when `precision` is float64.

    Only the command-line entry point calls this, before any array is created.
    """
    if precision == "float64":
        jax.config.update("jax_enable_x64", True)
