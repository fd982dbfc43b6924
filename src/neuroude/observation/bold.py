"""fMRI BOLD: the Balloon-Windkessel hemodynamic model driven by a readout of the latent state.

For each region (channel) a neural drive `z = C x + b` moves the vasodilatory
signal `s`, blood inflow `f`, blood volume `v` and deoxyhaemoglobin content `q`:

    ds/dt     = z - kappa s - gamma (f - 1)
    df/dt     = s
    tau dv/dt = f - v^(1/alpha)
    tau dq/dt = f E(f) / rho - v^(1/alpha) q / v,     E(f) = 1 - (1 - rho)^(1/f)
    BOLD      = V0 (k1 (1 - q) + k2 (1 - q / v) + k3 (1 - v))

with kappa = 0.65 /s, gamma = 0.41 /s, tau = 0.98 s, alpha = 0.32, rho = 0.34,
V0 = 0.02 and the classical coefficients k1 = 7 rho, k2 = 2, k3 = 2 rho - 0.2.
The constants and coefficients are those of Friston, Harrison and Penny (2003),
"Dynamic causal modelling", NeuroImage 19:1273-1302. Stephan et al. (2007),
"Comparing hemodynamic models with DCM", NeuroImage 38:387-401, call these
coefficients the classical BOLD equation and integrate the positive states as
logarithms, as done here.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..errors import ConfigError

KAPPA = 0.65  # 1/s, rate of signal decay
GAMMA = 0.41  # 1/s, rate of flow-dependent elimination
TAU = 0.98  # s, haemodynamic transit time
ALPHA = 0.32  # Grubb's exponent
RHO = 0.34  # resting oxygen extraction fraction
V0 = 0.02  # resting blood volume fraction
K1 = 7.0 * RHO
K2 = 2.0
K3 = 2.0 * RHO - 0.2
MIN_FLOW = 0.05  # floor on the blood flow f in the rates, far below its resting value 1
# A sustained drive z gives the steady flow f = 1 + z / GAMMA, which is positive only for z > -GAMMA.
MIN_DRIVE = 0.3  # deactivation is bounded at -MIN_DRIVE, inside that range


def bounded_drive(readout: Float[Array, "T n"]) -> Float[Array, "T n"]:
    """Keep activation as is and bound deactivation smoothly at -MIN_DRIVE: `m tanh(z / m)` for `z < 0`."""
    return jnp.where(readout >= 0, readout, MIN_DRIVE * jnp.tanh(readout / MIN_DRIVE))


def hemodynamic_rates(state: Float[Array, "4 n"], drive: Float[Array, " n"]) -> Float[Array, "4 n"]:
    """Time derivative of the state `(s, log f, log v, log q)`.

    Flow, volume and deoxyhaemoglobin are integrated as logarithms, so they stay
    positive for any step size, as in Stephan et al. (2007).
    """
    signal, log_flow, log_volume, log_dhb = state
    # NOTE: flow is floored at MIN_FLOW in these rates, a numerical guard that changes nothing above it.
    # Without it a strong deactivation drives f to 0 in finite time and d(log f)/dt = s / f diverges.
    flow = jnp.exp(jnp.maximum(log_flow, jnp.log(MIN_FLOW)))
    volume, dhb = jnp.exp(log_volume), jnp.exp(log_dhb)
    outflow = jnp.exp(log_volume / ALPHA)
    extraction = 1.0 - jnp.exp(jnp.log1p(-RHO) / flow)

    d_signal = drive - KAPPA * signal - GAMMA * (flow - 1.0)
    d_log_flow = signal / flow
    d_log_volume = (flow - outflow) / (TAU * volume)
    d_log_dhb = (flow * extraction / RHO - outflow * dhb / volume) / (TAU * dhb)
    return jnp.stack([d_signal, d_log_flow, d_log_volume, d_log_dhb])


def bold_signal(state: Float[Array, "4 n"]) -> Float[Array, " n"]:
    """Fractional BOLD change `V0 (k1 (1 - q) + k2 (1 - q / v) + k3 (1 - v))`; 0 at rest."""
    _, _, log_volume, log_dhb = state
    volume, dhb = jnp.exp(log_volume), jnp.exp(log_dhb)
    return V0 * (K1 * (1.0 - dhb) + K2 * (1.0 - dhb / volume) + K3 * (1.0 - volume))


def simulate_bold(drive: Float[Array, "T n"], bin_width: float, n_substeps: int) -> Float[Array, "T n"]:
    """Return the fractional BOLD change at each bin time for a neural drive held constant within each bin.

    The state starts at rest (s = 0, f = v = q = 1) at the first bin, so the
    first value is 0. Bin `k`'s drive acts from `t_k` to `t_k + dt` and is
    integrated with `n_substeps` classical Runge-Kutta steps. It first shows in
    the value at bin `k + 1`.
    """
    rest = jnp.zeros((4, drive.shape[1]), drive.dtype)
    _, readings = run_hemodynamics(rest, drive, bin_width, n_substeps)
    return readings


def run_hemodynamics(
    state: Float[Array, "4 n"], drive: Float[Array, "T n"], bin_width: float, n_substeps: int
) -> tuple[Float[Array, "4 n"], Float[Array, "T n"]]:
    """Integrate the hemodynamic state `(s, log f, log v, log q)` over the bins of `drive`, from `state`.

    Return the state after the last bin and the BOLD reading at each bin time,
    read before that bin's drive acts (see `simulate_bold`).
    """
    step = bin_width / n_substeps

    def rk4(state, z):
        k1 = hemodynamic_rates(state, z)
        k2 = hemodynamic_rates(state + 0.5 * step * k1, z)
        k3 = hemodynamic_rates(state + 0.5 * step * k2, z)
        k4 = hemodynamic_rates(state + step * k3, z)
        return state + step / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)

    def advance_bin(state, z):
        reading = bold_signal(state)
        for _ in range(n_substeps):
            state = rk4(state, z)
        return state, reading

    return jax.lax.scan(advance_bin, state, drive)


class BoldObservation(eqx.Module):
    """`y_tn ~ Normal(g_n BOLD_n(t) + b_n, s_n^2)`, BOLD from the Balloon-Windkessel model of region n.

    The neural drive of region `n` is `z_n = C x + b`, a linear readout of the
    latent path, with deactivation bounded smoothly above `-gamma` (see
    `bounded_drive`) so that the flow keeps a positive steady state. The gain `g_n > 0` maps the fractional BOLD change to the
    data's units (starting at 100, percent signal change), `b_n` is the offset
    and `s_n` the noise std, all learned per channel.

    Because BOLD does not act back on the latent state, it is integrated along
    the sampled path after the latent SDE is solved. To read BOLD at a repetition
    time longer than the latent model's bins, record `y` on the fine bin grid and
    set `mask` True only in the acquired bins.
    """

    readout: eqx.nn.Linear
    log_gain: Float[Array, " n"]
    offset: Float[Array, " n"]
    log_std: Float[Array, " n"]
    bin_width: float = eqx.field(static=True)
    n_substeps: int = eqx.field(static=True)

    def __init__(self, latent_size: int, n_channels: int, bin_width: float, n_substeps: int = 4, *, key: PRNGKeyArray):
        if not bin_width > 0:
            raise ConfigError(f"BOLD bin_width is {bin_width} s; expected a value > 0")
        if n_substeps < 1:
            raise ConfigError(f"BOLD n_substeps is {n_substeps}; expected an integer >= 1")
        self.readout = eqx.nn.Linear(latent_size, n_channels, key=key)
        self.log_gain = jnp.full((n_channels,), jnp.log(100.0), jnp.float32)
        self.offset = jnp.zeros((n_channels,), jnp.float32)
        self.log_std = jnp.zeros((n_channels,), jnp.float32)
        self.bin_width = float(bin_width)
        self.n_substeps = int(n_substeps)

    def drive(self, x: Float[Array, "T d"]) -> Float[Array, "T n"]:
        """Neural drive of each region: the readout `C x + b` with deactivation bounded by `bounded_drive`."""
        return bounded_drive(jax.vmap(self.readout)(x))

    def mean(self, x: Float[Array, "T d"]) -> Float[Array, "T n"]:
        bold = simulate_bold(self.drive(x), self.bin_width, self.n_substeps)
        return jnp.exp(self.log_gain) * bold + self.offset

    def log_prob(self, y: Float[Array, "T n"], x: Float[Array, "T d"], mask: Float[Array, "T n"]) -> Float[Array, ""]:
        return self._log_prob_given_bold(y, simulate_bold(self.drive(x), self.bin_width, self.n_substeps), mask)

    def start_state(self, x_first: Float[Array, " d"]) -> Float[Array, "4 n"]:
        """Return the hemodynamic state before the first bin, which is rest whatever the latent state `x_first`."""
        return jnp.zeros((4, self.offset.shape[0]), x_first.dtype)

    def window_log_prob(
        self, state: Float[Array, "4 n"], y: Float[Array, "L n"], x: Float[Array, "L d"], mask: Float[Array, "L n"]
    ) -> tuple[Float[Array, "4 n"], Float[Array, ""]]:
        """Return the hemodynamic state after a window of bins and the window's log likelihood, from `state`.

        The log likelihoods of consecutive windows, run from `start_state(x[0])`, sum to `log_prob` over the trial.
        """
        state, bold = run_hemodynamics(state, self.drive(x), self.bin_width, self.n_substeps)
        return state, self._log_prob_given_bold(y, bold, mask)

    def _log_prob_given_bold(
        self, y: Float[Array, "T n"], bold: Float[Array, "T n"], mask: Float[Array, "T n"]
    ) -> Float[Array, ""]:
        residual = (y - (jnp.exp(self.log_gain) * bold + self.offset)) / jnp.exp(self.log_std)
        terms = -0.5 * residual**2 - self.log_std - 0.5 * jnp.log(2.0 * jnp.pi)
        return jnp.sum(jnp.where(mask > 0, terms, 0.0))

    def sample(self, key: PRNGKeyArray, x: Float[Array, "T d"]) -> Float[Array, "T n"]:
        return self.sample_around(key, self.mean(x))

    def sample_around(self, key: PRNGKeyArray, mean: Float[Array, "... n"]) -> Float[Array, "... n"]:
        """Add the Gaussian measurement noise to the expected signal `mean`."""
        return mean + jnp.exp(self.log_std) * jax.random.normal(key, mean.shape, mean.dtype)
