"""Parameter families of a fitted drift: the stimulus level and the mechanistic constants.

`neuroude analyze` continues equilibria and scans regimes over these
parameters. A family is the prior drift `F(x, p)` with one parameter (or two,
for a regime scan) set to `p` and everything else at its fitted value. The
parameter is either the raw stimulus level `input` or a scalar mechanistic
constant of a white- or grey-box drift. The stimulus level is applied to every
input channel and passed through the encoder. A constant is named as in the
configuration's `model.constants`, for example `a` or `local.tau`. A constant is replaced by its physical value
`p`, whatever its constraint, so a continuation may cross values that fitting
would never reach (a negative time constant, for instance).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..dynamics.parameters import Constant
from ..errors import ConfigError

INPUT = "input"


def _is_constant(node) -> bool:
    return isinstance(node, Constant)


def _constant_paths(drift) -> dict[str, tuple]:
    """Return the key path of each scalar `Constant` in `drift`, by its configuration name."""
    flat, _ = jax.tree_util.tree_flatten_with_path(drift, is_leaf=_is_constant)
    paths = {}
    for path, leaf in flat:
        if isinstance(leaf, Constant) and np.size(leaf.raw) == 1:
            name = jax.tree_util.keystr(path).lstrip(".")
            # Grey-box wrappers keep the mechanistic model in a `mechanistic` field; configurations omit it.
            name = name.removeprefix("mechanistic.")
            paths[name] = path
    return paths


def drift_constants(model) -> dict[str, float]:
    """Return the fitted value of each scalar mechanistic constant of the model's drift, by name."""
    drift = model.sde.drift
    return {name: float(_node_at(drift, path).value) for name, path in _constant_paths(drift).items()}


def _node_at(tree, path):
    node = tree
    for key in path:
        if isinstance(key, jax.tree_util.GetAttrKey):
            node = getattr(node, key.name)
        elif isinstance(key, jax.tree_util.SequenceKey):
            node = node[key.idx]
        else:
            node = node[key.key]
    return node


def check_parameter_names(model, names) -> None:
    """Raise ConfigError for a name that is neither `input` nor a scalar constant of the model's drift."""
    constants = sorted(_constant_paths(model.sde.drift))
    drift_name = type(model.sde.drift).__name__
    for name in names:
        if name == INPUT:
            continue
        if not constants:
            raise ConfigError(
                f"the drift {drift_name} has no mechanistic constants, so it cannot be continued in {name!r}; "
                f"use {INPUT!r} (the stimulus level), or fit a white- or grey-box drift"
            )
        if name not in constants:
            raise ConfigError(
                f"the drift {drift_name} has no constant {name!r}; expected {INPUT!r} or one of {constants}"
            )


class ParameterFamily(eqx.Module):
    """`F(x, p)`: the prior drift with the named parameters set to the values in `p` (shape (k,))."""

    drift: eqx.Module
    encoder: eqx.Module
    base_stimulus: Float[Array, " s"]
    names: tuple[str, ...] = eqx.field(static=True)
    paths: tuple = eqx.field(static=True)

    def __call__(self, x: Float[Array, " d"], p: Float[Array, " k"]) -> Float[Array, " d"]:
        p = jnp.atleast_1d(p)
        stimulus = self.base_stimulus
        drift = self.drift
        for index, (name, path) in enumerate(zip(self.names, self.paths)):
            if name == INPUT:
                stimulus = jnp.full_like(self.base_stimulus, p[index])
                continue
            # A learnable "real" Constant returns its raw value unchanged, so `raw = p` sets the value to p.
            replaced = Constant(0.0, "real", learnable=True)
            replaced = eqx.tree_at(lambda constant: constant.raw, replaced, jnp.asarray(p[index], x.dtype))
            drift = eqx.tree_at(lambda tree, path=path: _node_at(tree, path), drift, replaced)
        u = self.encoder(stimulus[None])[0]
        return drift(0.0, x, u)


class ScalarFamily(eqx.Module):
    """`F(x, p)` with a scalar `p`, the form that `continue_equilibria` takes."""

    family: ParameterFamily

    def __call__(self, x: Float[Array, " d"], p: Float[Array, ""]) -> Float[Array, " d"]:
        return self.family(x, jnp.reshape(p, (1,)))


def parameter_family(model, names, base_stimulus) -> ParameterFamily:
    """Return the family of the model's prior drift over the parameters `names` around the raw stimulus `base_stimulus`.

    `base_stimulus` (one value per input channel) is the stimulus used for every
    name that is not `input`. Raises ConfigError for an unknown name.
    """
    names = tuple(names)
    check_parameter_names(model, names)
    constant_paths = _constant_paths(model.sde.drift)
    base = jnp.atleast_1d(jnp.asarray(base_stimulus, jnp.float32))
    if INPUT in names and base.size == 0:
        raise ConfigError(f"the recording has no stimulus, so there is no {INPUT!r} level to vary")
    paths = tuple(None if name == INPUT else constant_paths[name] for name in names)
    return ParameterFamily(model.sde.drift, model.encoder, base, names, paths)


def axis_label(name: str) -> str:
    return "stimulus level" if name == INPUT else f"constant {name}"
