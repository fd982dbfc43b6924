"""Izhikevich simple spiking neuron, with its after-spike reset made smooth."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..parameters import Constant
from .base import ConstantSpec, init_constants, input_gain

# Izhikevich (2003), IEEE Trans Neural Netw 14:1569-1572: the regular spiking (RS) cell.
CONSTANTS = {
    "a": ConstantSpec(0.02, unit="1/ms"),
    "b": ConstantSpec(0.2, unit="1/ms"),
    "c": ConstantSpec(-65.0, "real", unit="mV"),
    "d": ConstantSpec(8.0, "real", unit="mV/ms"),
    "v_peak": ConstantSpec(30.0, "real", unit="mV"),
    "i_ext": ConstantSpec(0.0, "real", unit="mV/ms"),
}

# Input current (model units, mV/ms) per unit of encoded input at initialisation. The
# RS cell fires tonically at about 22 Hz for I = 10, so an input of order 1 spans rest to firing.
INPUT_SCALE = 10.0

# The model is in ms and the drift is per s.
MS_PER_S = 1000.0

# Constants of the smooth reset, fixed rather than learned. They were tuned so that the
# RS cell's steady firing rate stays within 3% of the hybrid model's for I = 4, 10 and 20.
GATE_WIDTH = 1.0  # mV: width of the sigmoids in v that open and release the reset gate
SWITCH_WIDTH = 0.04  # width of the sigmoid in r that switches the reset current on at r = 0.5
SWITCH_RATE = 100.0  # 1/ms: rate at which the reset gate r opens
RELEASE_FACTOR = 4.0  # the gate closes this many times faster than it opens
RELEASE_MARGIN = 1.0  # mV: the gate closes once v is this close to c
RESET_RATE = 50.0  # 1/ms: rate at which the reset current pulls v towards c


class Izhikevich(eqx.Module):
    """Izhikevich drift in seconds, with a smooth approximation of the after-spike reset.

    The published model (time in ms, v in mV, u and the input current in mV/ms) is a hybrid system:

        dv/dt = 0.04 v^2 + 5 v + 140 - u + I(u_in)
        du/dt = a (b v - u)
        if v >= v_peak:  v <- c,  u <- u + d
        I(u_in) = i_ext + G u_in

    The jump cannot be written as a drift, so this class replaces it with a reset
    current switched by a third state variable, the reset gate r in [0, 1]:

        dv/dt = F(v, u) - K s_r(r) (v - c),        F(v, u) = 0.04 v^2 + 5 v + 140 - u + I
        du/dt = a (b v - u) - d / (v_peak - c) * s_r(r) dv/dt
        dr/dt = k_r [(1 - r) (s_peak(v) + s_r(r)) - R r s_c(v)]

    with the sigmoids s_peak(v) = sigma((v - v_peak) / w), s_c(v) = sigma((c + m - v) / w)
    and s_r(r) = sigma((r - 0.5) / w_r). When v crosses v_peak, r opens and then keeps
    itself open through the s_r term, so the current K (v - c) pulls v down to near c,
    where s_c closes r again. While the reset current is on, u grows by
    d / (v_peak - c) per mV that v falls, so a fall from v_peak to c adds d, as the jump does.
    The fixed constants of this approximation are w = `GATE_WIDTH` (1 mV),
    w_r = `SWITCH_WIDTH` (0.04), k_r = `SWITCH_RATE` (100 / ms), R = `RELEASE_FACTOR` (4),
    m = `RELEASE_MARGIN` (1 mV) and K = `RESET_RATE` (50 / ms).

    How the approximation differs from the hybrid model:

    - v overshoots v_peak by 1 to 2 mV and falls to c within about 0.1 ms instead of
      at once. The reset stops about 1.5 mV above c, and v relaxes from there.
    - The kick of u follows the actual fall of v, so it is about d (v_top - v_end) / (v_peak - c),
      7.5 to 7.7 instead of 8 for the RS cell. u also keeps its own dynamics during the reset.
    - For the RS cell, the steady firing rate is about 1% (I = 4), 2% (I = 10) and 3% (I = 20)
      above the hybrid model's, measured with scipy LSODA at tolerances of 1e-8.
    - s_r(0) is about 4e-6, not 0, so a weak reset current flows at all times. It
      moves the RS cell's rest by about 0.002 mV, to -70.002 mV.
    - The reset makes the drift stiff (rates up to 4e5 / s). Use an adaptive or
      implicit solver, or Heun steps of 5 us or less: for the RS cell at I = 10,
      Heun at 5 us gives the rate of an adaptive Tsit5 solution to within 1%.

    Constants and defaults (Izhikevich 2003, IEEE Trans Neural Netw 14:1569-1572,
    regular spiking cell):

        a = 0.02 1/ms        rate of the recovery variable u
        b = 0.2 1/ms         sensitivity of u to v
        c = -65 mV           after-spike reset value of v
        d = 8 mV/ms          after-spike increment of u
        v_peak = 30 mV       spike cut-off that triggers the reset
        i_ext = 0 mV/ms      constant input current, in the model's units

    The right-hand sides are multiplied by 1000 so that time is in seconds. State
    `x = (v, u, r)`. `G` (one weight per input, initially 10) maps the encoded input
    onto the input current. Only `v` is observable by default (`observable = (0,)`).
    `resting_state()` returns the resting state.

    Each constant is a `Constant`: pass `frozen=("c", ...)` to keep some fixed.
    """

    a: Constant
    b: Constant
    c: Constant
    d: Constant
    v_peak: Constant
    i_ext: Constant
    input_gain: Float[Array, " m"]
    observable: tuple[int, ...] = eqx.field(static=True, default=(0,))
    state_size: int = eqx.field(static=True, default=3)

    def __init__(self, input_size: int = 0, frozen: tuple[str, ...] = (), **values: float):
        init_constants(self, "Izhikevich", CONSTANTS, frozen, values)
        self.input_gain = input_gain(input_size, INPUT_SCALE)

    def __call__(self, t, x: Float[Array, " 3"], u: Float[Array, " m"]) -> Float[Array, " 3"]:
        v, recovery, gate = x[0], x[1], x[2]
        current = self.i_ext.value + jnp.dot(self.input_gain, u)
        c = self.c.value
        v_peak = self.v_peak.value

        reset_on = jax.nn.sigmoid((gate - 0.5) / SWITCH_WIDTH)
        dv = 0.04 * v**2 + 5.0 * v + 140.0 - recovery + current - RESET_RATE * reset_on * (v - c)
        du = self.a.value * (self.b.value * v - recovery) - self.d.value / (v_peak - c) * reset_on * dv

        at_peak = jax.nn.sigmoid((v - v_peak) / GATE_WIDTH)
        near_reset = jax.nn.sigmoid((c + RELEASE_MARGIN - v) / GATE_WIDTH)
        dgate = SWITCH_RATE * ((1.0 - gate) * (at_peak + reset_on) - RELEASE_FACTOR * gate * near_reset)
        return MS_PER_S * jnp.stack([dv, du, dgate])

    def resting_state(self) -> Float[Array, " 3"]:
        """Return the hybrid model's stable fixed point (v, u, 0) for the constant current `i_ext` and no other input.

        v is the lower root of 0.04 v^2 + (5 - b) v + 140 + i_ext = 0 and u = b v. Above
        the current where the roots merge there is no rest, and the vertex of the
        parabola, where the cell is closest to rest, is returned instead.
        """
        b = self.b.value
        linear = 5.0 - b
        # The floor keeps the gradient of the square root finite where the roots merge.
        discriminant = jnp.maximum(linear**2 - 4.0 * 0.04 * (140.0 + self.i_ext.value), 1e-12)
        v = (-linear - jnp.sqrt(discriminant)) / (2.0 * 0.04)
        return jnp.stack([v, b * v, jnp.zeros_like(v)])
