"""Grey-box drifts: a mechanistic model plus what a network learns it misses, or with one term learned."""

from __future__ import annotations

import sys

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..errors import ConfigError


class ResidualDrift(eqx.Module):
    """Additive residual: `f(x, u) = f_mech(x, u) + MLP([x, u])`.

    The network's last layer starts at zero, so fitting begins from the
    mechanistic model exactly. `residual_penalty` weighs the mean squared size of
    the residual along the posterior path in the loss, so the network does not
    absorb what the mechanistic part can explain.
    """

    mechanistic: eqx.Module
    residual: eqx.nn.MLP
    residual_penalty: float = eqx.field(static=True)
    state_size: int = eqx.field(static=True)

    def __init__(
        self,
        mechanistic: eqx.Module,
        input_size: int,
        width: int = 32,
        depth: int = 2,
        residual_penalty: float = 0.0,
        *,
        key: PRNGKeyArray,
    ):
        if residual_penalty < 0:
            raise ConfigError(f"residual_penalty is {residual_penalty}; expected a value >= 0")
        state_size = mechanistic.state_size
        mlp = eqx.nn.MLP(state_size + input_size, state_size, width, depth, activation=jax.nn.softplus, key=key)
        last = mlp.layers[-1]
        self.residual = eqx.tree_at(
            lambda m: (m.layers[-1].weight, m.layers[-1].bias), mlp, (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias))
        )
        self.mechanistic = mechanistic
        self.residual_penalty = float(residual_penalty)
        self.state_size = state_size

    def residual_term(self, t, x: Float[Array, " d"], u: Float[Array, " m"]) -> Float[Array, " d"]:
        return self.residual(jnp.concatenate([x, u]))

    def __call__(self, t, x: Float[Array, " d"], u: Float[Array, " m"]) -> Float[Array, " d"]:
        return self.mechanistic(t, x, u) + self.residual_term(t, x, u)


def _closure_terms(mechanistic: eqx.Module) -> tuple[dict[str, str], dict[str, tuple], tuple[str, ...]]:
    """Return the TERMS, TERM_SIZES and PERIODIC_TERMS of the module that defines the mechanistic model's class."""
    model_name = type(mechanistic).__name__
    module = sys.modules[type(mechanistic).__module__]
    terms = getattr(module, "TERMS", None)
    if terms is None or not hasattr(mechanistic, "drift_with"):
        raise ConfigError(
            f"the {model_name} drift has no terms a closure can replace; "
            "expected a mechanistic model whose module defines TERMS and whose class has drift_with"
        )
    return terms, module.TERM_SIZES, getattr(module, "PERIODIC_TERMS", ())


class NeuralClosure(eqx.Module):
    """Neural closure: the mechanistic drift `f(x, u) = f_mech(x, u; g)` with one named term given by a network `g`.

    `term` names an entry of the `TERMS` of the mechanistic model's module (for
    example "recovery" of FitzHugh-Nagumo, "coupling" of Kuramoto, "sigmoid" of
    Wilson-Cowan), and `TERM_SIZES` gives the network's input and output sizes.
    A term listed in `PERIODIC_TERMS` is 2 pi-periodic, so its network reads
    `(sin z, cos z)` in place of `z`. The network's last layer starts at zero, so
    the replaced term starts at 0 everywhere: the fit begins from the mechanistic
    model without that term. The mechanistic constants stay learnable, except
    that constants entering only the replaced term no longer affect the drift.
    """

    mechanistic: eqx.Module
    network: eqx.nn.MLP
    term: str = eqx.field(static=True)
    periodic: bool = eqx.field(static=True)
    state_size: int = eqx.field(static=True)

    def __init__(self, mechanistic: eqx.Module, term: str, width: int = 32, depth: int = 2, *, key: PRNGKeyArray):
        terms, sizes, periodic_terms = _closure_terms(mechanistic)
        if term not in terms:
            raise ConfigError(
                f"closure term {term!r} is not a term of the {type(mechanistic).__name__} drift; "
                f"expected one of {sorted(terms)}"
            )
        if not isinstance(width, int) or width < 1:
            raise ConfigError(f"closure width is {width!r}; expected a positive integer")
        if not isinstance(depth, int) or depth < 0:
            raise ConfigError(f"closure depth is {depth!r}; expected a non-negative integer")

        in_size, out_size = sizes[term]
        periodic = term in periodic_terms
        if periodic and in_size != "scalar":
            raise ConfigError(f"periodic closure term {term!r} has input size {in_size!r}; expected 'scalar'")
        network_in_size = 2 if periodic else in_size
        mlp = eqx.nn.MLP(network_in_size, out_size, width, depth, activation=jax.nn.softplus, key=key)
        last = mlp.layers[-1]
        self.network = eqx.tree_at(
            lambda m: (m.layers[-1].weight, m.layers[-1].bias), mlp, (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias))
        )
        self.mechanistic = mechanistic
        self.term = term
        self.periodic = periodic
        self.state_size = mechanistic.state_size

    def _term_value(self, z: Float[Array, "..."]) -> Float[Array, "..."]:
        features = jnp.stack([jnp.sin(z), jnp.cos(z)]) if self.periodic else z
        return self.network(features)

    def closure_term(self, inputs: Float[Array, "..."]) -> Float[Array, "..."]:
        """Evaluate the learned term at a batch of its inputs.

        `inputs` has the term's input shape after any leading batch axes: (..., 2)
        for the FitzHugh-Nagumo recovery term, which reads the state, and (...)
        for a term of one value, such as a phase difference or a population's
        input. The result has the batch axes followed by the term's output shape.
        """
        in_size = self.network.in_size if not self.periodic else "scalar"
        term_shape = () if in_size == "scalar" else (in_size,)
        inputs = jnp.asarray(inputs, dtype=jnp.float32)
        batch_ndim = inputs.ndim - len(term_shape)
        if batch_ndim < 0 or inputs.shape[batch_ndim:] != term_shape:
            raise ConfigError(
                f"closure term {self.term!r} got inputs of shape {inputs.shape}; expected a shape ending in {term_shape}"
            )

        batch_shape = inputs.shape[:batch_ndim]
        flat = inputs.reshape((-1, *term_shape))
        values = jax.vmap(self._term_value)(flat)
        return values.reshape(batch_shape + values.shape[1:])

    def __call__(self, t, x: Float[Array, " d"], u: Float[Array, " m"]) -> Float[Array, " d"]:
        return self.mechanistic.drift_with(t, x, u, {self.term: self._term_value})
