"""Conduction delays for whole-brain networks, simulated with a history buffer.

A signal from node j reaches node i after `D_ij = L_ij / v`, the fibre length
over the conduction speed. With delays the coupling of `BrainNetwork` reads the
sender's past state:

    c_i(t) = sum_j C_ij (x_j[v](t - D_ij) - x_i[v](t))        (diffusive)
    c_i(t) = sum_j C_ij x_j[v](t - D_ij)                       (additive)

`simulate_network` integrates this delay SDE with Euler-Maruyama in nested
`lax.scan`s. A ring buffer stores the recent values of the coupling variable of
every node (twice, see `_BlockedDelays` and `_buffered_coupling`), so memory
grows with the longest delay, not with the duration. Delays are rounded to
whole steps of `dt`, and the state before the start is taken to be constant at
`x0` (the usual constant pre-history).
The function is differentiable in the network's constants, the initial state
and the input.

Fitting uses a ring buffer as well: `DelayLine` is the history state that
`solve.solve_fixed_step` carries for a `BrainNetwork` built with delays. It
does not round: a delay of `k + f` steps (0 <= f < 1) reads the linear
interpolation between the values `k` and `k + 1` steps ago, so the path is
continuous and differentiable in the conduction speed and the fibre lengths.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ...errors import ConfigError
from ...threefry import threefry_normal

if TYPE_CHECKING:
    from .network import BrainNetwork


def conduction_delays(fibre_lengths, conduction_speed: float) -> np.ndarray:
    """Return the delays `D_ij` in seconds from fibre lengths in mm and a conduction speed in m/s.

    A length of 1 mm at 1 m/s takes 1 ms. The diagonal is ignored (set to 0)
    because a node does not couple to itself.
    """
    lengths = check_fibre_lengths(fibre_lengths)
    if not (np.isfinite(conduction_speed) and conduction_speed > 0):
        raise ConfigError(f"conduction_speed is {conduction_speed}; expected a speed > 0 in m/s")
    return lengths * 1e-3 / conduction_speed


def check_fibre_lengths(fibre_lengths) -> np.ndarray:
    """Return the fibre lengths as a float64 (N, N) matrix in mm with a zero diagonal, or raise ConfigError."""
    try:
        lengths = np.asarray(fibre_lengths, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"fibre lengths could not be read as a numeric matrix ({error}); expected mm") from None

    if lengths.ndim != 2 or lengths.shape[0] != lengths.shape[1]:
        raise ConfigError(f"fibre lengths have shape {lengths.shape}; expected a square N x N matrix in mm")
    bad = np.argwhere(~np.isfinite(lengths) | (lengths < 0))
    if bad.size:
        i, j = bad[0]
        raise ConfigError(
            f"fibre lengths have {len(bad)} negative or non-finite entries, the first at [{i}, {j}] = "
            f"{lengths[i, j]}; expected finite lengths >= 0 in mm"
        )
    lengths = lengths.copy()
    np.fill_diagonal(lengths, 0.0)
    return lengths


def delay_steps(delays, dt: float, n_nodes: int) -> np.ndarray:
    """Return the delays rounded to whole solver steps of `dt` seconds, as an (N, N) integer matrix."""
    matrix = check_delays(delays, n_nodes)
    if not (np.isfinite(dt) and dt > 0):
        raise ConfigError(f"dt is {dt}; expected a step > 0 in seconds")
    return np.rint(matrix / dt).astype(np.int32)


def check_delays(delays, n_nodes: int) -> np.ndarray:
    """Return `delays` as a float64 (N, N) matrix in seconds, raising ConfigError unless all are finite and >= 0."""
    matrix = np.asarray(delays, dtype=np.float64)
    if matrix.shape != (n_nodes, n_nodes):
        raise ConfigError(f"delays have shape {matrix.shape}; expected ({n_nodes}, {n_nodes}), one per node pair")
    if not np.all(np.isfinite(matrix)) or np.any(matrix < 0):
        raise ConfigError("delays contain negative or non-finite entries; expected finite delays >= 0 in seconds")
    return matrix


def history_length(max_delay: float, dt: float) -> int:
    """Return the ring buffer length for delays up to `max_delay` seconds at steps of `dt`.

    A delay of `k + f` steps reads the values `k` and `k + 1` steps ago, so the
    buffer stores `ceil(max_delay / dt) + 1` values. A longest delay within 1e-6
    steps of a whole number counts as that number, so that float rounding of
    an integer delay does not add a slot.
    """
    return int(np.ceil(max_delay / dt - 1e-6)) + 1


class DelayLine(eqx.Module):
    """Ring buffer of the coupling variable of every node over the last `length` solver steps.

    `lags[i, j]` is the delay `D_ij` in solver steps and may be fractional.
    `read` returns the (N, N) matrix `x_j[v](t - D_ij)` seen by receiver `i`
    from sender `j`, linearly interpolated between the two stored steps around
    each delay, which for a whole number of steps is the stored value itself.
    Lags outside `[0, length - 1]` are clipped to that range. Before the start
    the history is the initial state held constant.

    The history state is `(buffer, pointer)`, a flat buffer of `2 * length`
    rows of N values where each step writes its row twice, at `pointer` and
    `pointer + length`. Row `pointer + length - n` is then the value `n` steps
    ago for every n in [0, length - 1], so a read adds the pointer to offsets
    computed once here and needs no modulo.
    """

    lags: Float[Array, "N N"]
    fraction: Float[Array, "N N"]
    offsets: Int[Array, "N N"]
    length: int = eqx.field(static=True)
    n_nodes: int = eqx.field(static=True)
    local_state_size: int = eqx.field(static=True)
    coupling_variable: int = eqx.field(static=True)

    def __init__(self, lags, length: int, n_nodes: int, local_state_size: int, coupling_variable: int):
        self.lags = jnp.asarray(lags, dtype=jnp.result_type(lags, jnp.float32))
        self.length, self.n_nodes = length, n_nodes
        self.local_state_size, self.coupling_variable = local_state_size, coupling_variable

        # The newer of the two steps stops one short of the oldest, so that a lag of exactly
        # `length - 1` reads the oldest step with weight 1 and never one past it.
        lags = jnp.clip(self.lags, 0, length - 1)
        whole = jnp.minimum(jnp.floor(lags), max(length - 2, 0))
        self.fraction = lags - whole
        rows = length - whole.astype(jnp.int32)
        self.offsets = rows * n_nodes + jnp.arange(n_nodes, dtype=jnp.int32)[None, :]

    def sent(self, x: Float[Array, " d"]) -> Float[Array, " N"]:
        """Return the coupling variable of every node in the flat state `x`."""
        return x.reshape(self.n_nodes, self.local_state_size)[:, self.coupling_variable]

    def initial(self, x0: Float[Array, " d"]) -> tuple[Float[Array, " 2LN"], Int[Array, ""]]:
        """Return the history state with every past step equal to `x0`."""
        return jnp.tile(self.sent(x0), 2 * self.length), jnp.zeros((), jnp.int32)

    def push(self, state, x: Float[Array, " d"]):
        """Return the history state after one more step that ended at `x`."""
        buffer, pointer = state
        pointer = (pointer + 1) % self.length
        row = self.sent(x).astype(buffer.dtype)
        buffer = jax.lax.dynamic_update_slice(buffer, row, (pointer * self.n_nodes,))
        buffer = jax.lax.dynamic_update_slice(buffer, row, ((pointer + self.length) * self.n_nodes,))
        return buffer, pointer

    def read(self, state) -> Float[Array, "N N"]:
        """Return `past[i, j]`, the coupling variable of sender `j` that reaches receiver `i` at the current step."""
        buffer, pointer = state
        newer = buffer[self.offsets + pointer * self.n_nodes]
        older = buffer[self.offsets + (pointer - 1) * self.n_nodes]
        return newer + self.fraction * (older - newer)


# Steps per chunk of the outer scan: the Brownian increments of a chunk are drawn in one call.
CHUNK_STEPS = 200


def _blocks_per_chunk(n_blocks: int, save_every: int) -> int:
    """Return the largest divisor of `n_blocks` whose blocks span at most CHUNK_STEPS steps (at least 1)."""
    limit = max(1, CHUNK_STEPS // save_every)
    return max(divisor for divisor in range(1, min(limit, n_blocks) + 1) if n_blocks % divisor == 0)


# The coupling matrix without delays is padded with zeros to a multiple of this many nodes.
MATRIX_MULTIPLE = 8


def _instantaneous_coupling(network: BrainNetwork):
    """Return `current -> G c` for coupling without delays, as one matrix-vector product."""
    weights = network.connectivity.value
    if network.coupling == "diffusive":
        # sum_j C_ij (x_j - x_i) = sum_j (C - diag(rowsum C))_ij x_j
        weights = weights - jnp.diag(jnp.sum(weights, axis=1))
    matrix = network.global_coupling.value * weights

    # Zero rows and columns up to a multiple of 8 nodes: XLA's CPU matrix-vector product of 94 nodes ran about
    # 1.4 times faster padded to 96 (see benchmarks/README.md).
    padding = -network.n_nodes % MATRIX_MULTIPLE
    if padding == 0:
        return lambda current, history, pointer: matrix @ current
    matrix = jnp.pad(matrix, ((0, padding), (0, padding)))
    return lambda current, history, pointer: (matrix @ jnp.pad(current, (0, padding)))[: network.n_nodes]


def _buffered_coupling(network: BrainNetwork, lags: np.ndarray, length: int):
    """Return `(current, history, pointer) -> G c` that reads each sender `lags[i, j]` steps in the past.

    The history is a flat buffer of `2 * length` rows of N values, time-major,
    and each step writes its row twice, at `pointer` and `pointer + length`.
    Row `pointer + length - lag` is then the value `lag` steps ago for every
    lag in [0, length - 1], so the read needs fixed offsets and no modulo.
    """
    n_nodes = network.n_nodes
    offsets = jnp.asarray(((length - lags) * n_nodes + np.arange(n_nodes)[None, :]).reshape(-1), jnp.int32)
    weights = network.connectivity.value
    row_sums = jnp.sum(weights, axis=1)

    def coupling(current, history, pointer):
        past = history[offsets + pointer * n_nodes].reshape(n_nodes, n_nodes)
        incoming = jnp.sum(weights * past, axis=1)
        if network.coupling == "diffusive":
            incoming = incoming - row_sums * current
        return network.global_coupling.value * incoming

    return coupling


def _record(history, pointer, value, length: int):
    """Return the history and pointer after writing `value`, the newest row, at both of its positions."""
    n_nodes = value.shape[0]
    pointer = (pointer + 1) % length
    history = jax.lax.dynamic_update_slice(history, value, (pointer * n_nodes,))
    history = jax.lax.dynamic_update_slice(history, value, ((pointer + length) * n_nodes,))
    return history, pointer


# Maximum number of steps per block whose delayed inputs are read in one gather (see `_BlockedDelays`).
BLOCK_STEPS = 20


def _block_size(chunk_steps: int, block_steps: int) -> int:
    """Return the largest divisor of `chunk_steps` that is at most `block_steps` (at least 1)."""
    limit = max(1, min(block_steps, chunk_steps))
    return max(divisor for divisor in range(1, limit + 1) if chunk_steps % divisor == 0)


def _known_connections(network: BrainNetwork) -> np.ndarray | None:
    """Return where the connectivity is non-zero, or None when it is traced and so unknown when the program is built."""
    try:
        weights = np.asarray(network.connectivity.raw)
    except jax.errors.TracerArrayConversionError:
        return None
    return weights != 0


class _BlockedDelays:
    """Delayed coupling read for a block of `block` steps at a time.

    At step `b` of a block that starts at step `t0`, the connection `(i, j)`
    with lag `l` reads the sender's value at step `t0 + b - l`. While `b <= l`
    that value was written before the block started, so one gather per block
    reads, for every connection, its `block` consecutive past values. Only the
    reads with `b > l` (connections with lags shorter than the block) fall
    inside the block, and each step takes them from the values the block has
    computed so far.

    The history is sender-major, shape (N, 2 * ring), so the `block` values of
    one connection are contiguous. Each block writes its columns twice, at
    `pointer` and `pointer + ring`, so column `pointer + ring - 1 - k` contains the
    value `k` steps before the block's first step for every k in [0, ring - 1].
    `ring` is a multiple of `block` that exceeds the longest lag, so a block's
    columns never wrap. The gather's reads with `b > l` land on columns
    `pointer + ring` to `pointer + ring + block - 2`, which no other read of
    the block uses. `write` zeroes those columns for the next block, so these
    reads add 0. A mask would do the same but costs as much as the gather.
    """

    def __init__(self, network: BrainNetwork, lags: np.ndarray, block: int, connected: np.ndarray | None):
        self.network, self.block = network, block
        self.n_nodes = n_nodes = network.n_nodes
        self.ring = block * -(-(int(lags.max()) + 1) // block)
        if connected is None:
            connected = np.ones_like(lags, dtype=bool)

        senders = np.broadcast_to(np.arange(n_nodes)[None, :], (n_nodes, n_nodes))
        self.starts = jnp.asarray(np.stack([senders, self.ring - 1 - lags], -1).reshape(-1, 2), jnp.int32)
        self._index_in_block(lags, connected)

    def _index_in_block(self, lags: np.ndarray, connected: np.ndarray) -> None:
        """Store, for each step `b`, the senders and flat indices of the reads with `b > lag` (padded per receiver)."""
        self.in_block = []
        for step in range(self.block):
            reads = connected & (lags < step)
            counts = reads.sum(axis=1)
            width = int(counts.max())
            if width == 0:
                self.in_block.append(None)
                continue

            senders = np.zeros((self.n_nodes, width), np.int64)
            for receiver in range(self.n_nodes):
                columns = np.flatnonzero(reads[receiver])
                senders[receiver, : len(columns)] = columns
            present = np.arange(width)[None, :] < counts[:, None]
            # Row `step - lag - 1` of the block's values is the value `lag` steps before step `step`.
            rows = np.where(present, step - 1 - np.take_along_axis(lags, senders, axis=1), 0)
            self.in_block.append(
                (jnp.asarray(senders, jnp.int32), jnp.asarray(present), jnp.asarray(rows * self.n_nodes + senders, jnp.int32))
            )

    def initial(self, sent0: Float[Array, " N"]) -> Float[Array, "N R"]:
        """Return the history before the start: every past value equal to `sent0`, the first block's reads past it 0."""
        history = jnp.broadcast_to(sent0[:, None], (self.n_nodes, 2 * self.ring))
        return history.at[:, self.ring : self.ring + self.block].set(0.0)

    def read_history(self, history, pointer) -> Float[Array, "N B"]:
        """Return `sum_j C_ij x_j[v](t - D_ij)` over the reads from before the block, for every step of the block."""
        numbers = jax.lax.GatherDimensionNumbers(offset_dims=(1,), collapsed_slice_dims=(0,), start_index_map=(0, 1))
        starts = self.starts + jnp.stack([jnp.zeros_like(pointer), pointer])
        past = jax.lax.gather(history, starts, numbers, (1, self.block), mode="promise_in_bounds")
        past = past.reshape(self.n_nodes, self.n_nodes, self.block)
        # Unconnected pairs have weight 0, and the reads with `b > lag` read the zeroed columns.
        return jnp.sum(self.network.connectivity.value[:, :, None] * past, axis=1)

    def read_in_block(self, values: list, step: int) -> Float[Array, " N"] | None:
        """Return `sum_j C_ij x_j[v](t - D_ij)` over the reads of step `step` that fall inside the block, or None."""
        if self.in_block[step] is None:
            return None
        senders, present, index = self.in_block[step]
        receivers = jnp.arange(self.n_nodes)[:, None]
        weights = jnp.where(present, self.network.connectivity.value[receivers, senders], 0.0)
        return jnp.sum(weights * jnp.stack(values).reshape(-1)[index], axis=1)

    def write(self, history, pointer, block_values: Float[Array, "N B"]):
        """Return the history and pointer after writing the block's values twice and zeroing the next block's reads past them."""
        first_row = jnp.zeros_like(pointer)
        history = jax.lax.dynamic_update_slice(history, block_values, (first_row, pointer))
        history = jax.lax.dynamic_update_slice(history, block_values, (first_row, pointer + self.ring))
        pointer = (pointer + self.block) % self.ring
        history = jax.lax.dynamic_update_slice(history, jnp.zeros_like(block_values), (first_row, pointer + self.ring))
        return history, pointer


def simulate_network(
    network: BrainNetwork,
    x0: Float[Array, " d"],
    dt: float,
    n_steps: int,
    *,
    delays=None,
    u: Float[Array, "n_steps m"] | None = None,
    noise_scale: float | Float[Array, " d"] = 0.0,
    key: PRNGKeyArray | None = None,
    save_every: int = 1,
    unroll: int = 10,
    block_steps: int = BLOCK_STEPS,
) -> Float[Array, "n_saved d"]:
    """Integrate the network with additive noise by Euler-Maruyama; return the states every `save_every` steps.

    `delays` is an (N, N) matrix in seconds (see `conduction_delays`), or None
    for instantaneous coupling. `u` contains one input row per step (zeros when
    None). `noise_scale` is the additive diffusion, a scalar or one value per
    state, and needs `key` when non-zero. The output starts with `x0` and has
    `n_steps // save_every + 1` rows.

    The increments of saved block `b` (steps `b * save_every` to
    `(b + 1) * save_every - 1`) are `sqrt(dt)` times standard normals drawn
    from `fold_in(key, b)`, so a run is reproducible from its key whatever the
    chunking. They equal `jax.random.normal` draws (see `threefry_normal`). The
    outer scan runs over chunks of up to `CHUNK_STEPS` steps and draws a
    chunk's increments in one call, and the inner scan over steps is unrolled
    `unroll` times (at most `save_every` times without delays, where each
    saved block is a scan of its own). Without delays (or when every delay
    rounds to 0 steps) the coupling is one matrix-vector product with no
    history buffer.
    With delays the steps run in blocks of the largest divisor of the chunk
    that is at most `block_steps` (see `_BlockedDelays`): the history is read
    once per block, which is faster than a read at every step but compiles
    more slowly as blocks grow. `block_steps=1` reads it at every step.
    NOTE: chunks must divide the run, so a number of saved blocks with no
    divisor near `CHUNK_STEPS / save_every` (a large prime) gives short chunks, which run slower.
    """
    if n_steps < 1 or save_every < 1 or n_steps % save_every:
        raise ConfigError(
            f"n_steps is {n_steps} and save_every {save_every}; expected positive integers with n_steps a "
            f"multiple of save_every"
        )
    if not (isinstance(block_steps, int | np.integer) and block_steps >= 1):
        raise ConfigError(f"block_steps is {block_steps!r}; expected an integer >= 1 (1 reads the history every step)")
    x0 = jnp.asarray(x0)
    if x0.shape != (network.state_size,):
        raise ConfigError(f"x0 has shape {x0.shape}; expected ({network.state_size},), the flat network state")

    lags = np.zeros((network.n_nodes,) * 2, np.int32) if delays is None else delay_steps(delays, dt, network.n_nodes)
    length = int(lags.max()) + 1
    input_size = network.input_size or 0
    if u is None:
        u = jnp.zeros((n_steps, input_size), x0.dtype)
    elif u.shape != (n_steps, input_size):
        raise ConfigError(f"u has shape {u.shape}; expected ({n_steps}, {input_size}), one input row per step")

    noisy = not (isinstance(noise_scale, float | int) and noise_scale == 0)
    if noisy and key is None:
        raise ConfigError("noise_scale is non-zero but key is None; pass a jax.random key for the Brownian increments")

    n_blocks = n_steps // save_every
    blocks = _blocks_per_chunk(n_blocks, save_every)
    chunk_steps = blocks * save_every
    block = _block_size(chunk_steps, block_steps) if length > 1 else 1
    if jnp.ndim(noise_scale) == 1:
        noise_scale = _by_variable(network, jnp.asarray(noise_scale))
    if block > 1:
        delayed = _BlockedDelays(network, lags, block, _known_connections(network))
        advance = _blocked_steps(network, delayed, dt, noise_scale)
        history0 = delayed.initial(network.node_states(x0)[:, network.coupling_variable])
    else:
        advance = _single_steps(network, lags, length, dt, noise_scale)
        history0 = _single_step_history(network, x0, length)

    def draw(index):
        return threefry_normal(jax.random.fold_in(key, index), (save_every, network.state_size), x0.dtype)

    def chunk(carry, chunk_inputs):
        index, drives = chunk_inputs
        if noisy:
            noise = jax.vmap(draw)(index * blocks + jnp.arange(blocks)).reshape(chunk_steps, -1) * jnp.sqrt(dt)
        else:
            noise = jnp.zeros((chunk_steps, network.state_size), x0.dtype)
        steps = index * chunk_steps + jnp.arange(chunk_steps)
        inputs = (steps, drives, noise)
        if block == 1:
            carry, saved = _advance_saved_blocks(advance, carry, inputs, blocks, save_every, unroll)
            return carry, _by_node(saved)

        inputs = jax.tree.map(lambda a: a.reshape(chunk_steps // block, block, *a.shape[1:]), inputs)
        carry, states = jax.lax.scan(advance, carry, inputs, unroll=max(1, min(unroll, chunk_steps) // block))
        saved = states.reshape(chunk_steps, *states.shape[2:])[save_every - 1 :: save_every]
        return carry, _by_node(saved)

    n_chunks = n_blocks // blocks
    drives = u.reshape(n_chunks, chunk_steps, input_size)
    carry0 = (_by_variable(network, x0), history0, jnp.zeros((), jnp.int32))
    _, saved = jax.lax.scan(chunk, carry0, (jnp.arange(n_chunks), drives))
    return jnp.concatenate([x0[None], saved.reshape(-1, network.state_size)])


def _advance_saved_blocks(advance, carry, inputs, blocks: int, save_every: int, unroll: int):
    """Run single steps over `blocks` saved blocks of `save_every` steps; return the carry and each block's last state.

    The steps of a block write no output, so the state is stored once per saved block and not at every step.
    """
    inputs = jax.tree.map(lambda a: a.reshape(blocks, save_every, 1, *a.shape[1:]), inputs)

    def step(carry, step_inputs):
        carry, _ = advance(carry, step_inputs)
        return carry, None

    def saved_block(carry, block_inputs):
        carry, _ = jax.lax.scan(step, carry, block_inputs, unroll=max(1, min(unroll, save_every)))
        return carry, carry[0]

    return jax.lax.scan(saved_block, carry, inputs)


def _by_variable(network: BrainNetwork, flat):
    """Return flat network states (node by node, last axis) as one row per local variable, shape (..., s, N).

    The steps run in this layout, so that the coupling variable of all nodes is
    one contiguous row for the coupling's matrix-vector product.
    """
    nodes = flat.reshape(*flat.shape[:-1], network.n_nodes, network.local_state_size)
    return jnp.swapaxes(nodes, -1, -2)


def _by_node(variables):
    """Return states laid out by `_by_variable` as flat network states, node by node."""
    return jnp.swapaxes(variables, -1, -2).reshape(*variables.shape[:-2], -1)


def _single_step_history(network: BrainNetwork, x0, length: int):
    """Return the flat history of `_buffered_coupling` before the start (empty without delays)."""
    if length == 1:
        return jnp.zeros((0,), x0.dtype)
    return jnp.tile(network.node_states(x0)[:, network.coupling_variable], 2 * length)


def _single_steps(network: BrainNetwork, lags: np.ndarray, length: int, dt: float, noise_scale):
    """Return the scan body that advances one Euler-Maruyama step, reading the history at every step."""
    variable = network.coupling_variable
    if length == 1:
        coupling = _instantaneous_coupling(network)
    else:
        coupling = _buffered_coupling(network, lags, length)

    def step(carry, inputs):
        x, history, pointer = carry
        (n,), (drive,), (noise,) = inputs
        current = x[variable]
        drifts = network.variable_drifts(n * dt, x, drive)
        drifts = drifts.at[network.target_variable].add(coupling(current, history, pointer))
        x = x + drifts * dt + noise_scale * _by_variable(network, noise)
        if length > 1:
            history, pointer = _record(history, pointer, x[variable], length)
        return (x, history, pointer), x[None]

    return step


def _blocked_steps(network: BrainNetwork, delayed: _BlockedDelays, dt: float, noise_scale):
    """Return the scan body that advances a block of Euler-Maruyama steps, reading the history once per block."""
    variable = network.coupling_variable
    row_sums = jnp.sum(network.connectivity.value, axis=1)

    def block_step(carry, inputs):
        x, history, pointer = carry
        steps, drives, noise = inputs
        from_history = delayed.read_history(history, pointer)

        sent, states = [], []
        for b in range(delayed.block):
            current = x[variable]
            incoming = from_history[:, b]
            in_block = delayed.read_in_block(sent, b)
            if in_block is not None:
                incoming = incoming + in_block
            if network.coupling == "diffusive":
                incoming = incoming - row_sums * current
            drifts = network.variable_drifts(steps[b] * dt, x, drives[b])
            drifts = drifts.at[network.target_variable].add(network.global_coupling.value * incoming)
            x = x + drifts * dt + noise_scale * _by_variable(network, noise[b])
            sent.append(x[variable])
            states.append(x)

        history, pointer = delayed.write(history, pointer, jnp.stack(sent, axis=1))
        return (x, history, pointer), jnp.stack(states)

    return block_step
