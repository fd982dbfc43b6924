"""Jansen-Rit neural mass model of a cortical column."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..parameters import Constant
from .base import ConstantSpec, init_constants, input_gain

# Jansen & Rit (1995), Biol Cybern 73:357-366, standard constants. The
# connectivity constants are C1..C4 = C, 0.8 C, 0.25 C, 0.25 C.
CONSTANTS = {
    "A": ConstantSpec(3.25, unit="mV"),
    "B": ConstantSpec(22.0, unit="mV"),
    "a": ConstantSpec(100.0, unit="1/s"),
    "b": ConstantSpec(50.0, unit="1/s"),
    "C": ConstantSpec(135.0, unit="dimensionless"),
    "v0": ConstantSpec(6.0, "real", unit="mV"),
    "e0": ConstantSpec(2.5, unit="1/s"),
    "r": ConstantSpec(0.56, unit="1/mV"),
    "p": ConstantSpec(220.0, "real", unit="pulses/s"),
}

# Fractions of C in C1 (pyramidal -> excitatory), C2 (excitatory -> pyramidal),
# C3 (pyramidal -> inhibitory) and C4 (inhibitory -> pyramidal).
CONNECTIVITY_FRACTIONS = (1.0, 0.8, 0.25, 0.25)

# Initial weight (pulses/s per unit of encoded input) of the input added to p.
# Jansen & Rit drew p from 120-320 pulses/s, so a unit input moves p by a tenth
# of that range.
INPUT_SCALE = 10.0


class JansenRit(eqx.Module):
    """Jansen-Rit drift in seconds, with states in mV and mV/s.

        dy0/dt = y3
        dy1/dt = y4
        dy2/dt = y5
        dy3/dt = A a S(y1 - y2) - 2 a y3 - a^2 y0
        dy4/dt = A a (p + G u + C2 S(C1 y0)) - 2 a y4 - a^2 y1
        dy5/dt = B b C4 S(C3 y0) - 2 b y5 - b^2 y2
        S(v)   = 2 e0 / (1 + exp(r (v0 - v)))

    State `x = (y0, y1, y2, y3, y4, y5)`: `y0` is the output of the pyramidal
    population, `y1` the excitatory and `y2` the inhibitory postsynaptic
    potential onto it (mV), and `y3..y5` their time derivatives (mV/s). The EEG
    signal is the pyramidal membrane potential `y1 - y2`, returned by
    `output(x)`. `observable = (1, 2)` lists the two states it is made of, so a
    linear readout with weights (1, -1) recovers it.

    Defaults are the standard constants of Jansen & Rit (1995): A = 3.25 mV and
    B = 22 mV (maximum excitatory and inhibitory PSP), a = 100/s and b = 50/s
    (inverse synaptic time constants), C = 135 with C1..C4 = C, 0.8 C, 0.25 C,
    0.25 C (mean synapse counts), v0 = 6 mV, e0 = 2.5/s and r = 0.56/mV (sigmoid
    threshold, half maximum firing rate and slope), and p = 220 pulses/s
    (mean external input, drawn by Jansen & Rit from 120-320 pulses/s). `G`
    (1 x inputs, starting at 10 pulses/s per unit) adds the encoded stimulus to p.

    Each constant is a `Constant`: pass `frozen=("A", ...)` to keep some fixed.
    """

    A: Constant
    B: Constant
    a: Constant
    b: Constant
    C: Constant
    v0: Constant
    e0: Constant
    r: Constant
    p: Constant
    input_gain: Float[Array, " m"]
    observable: tuple[int, ...] = eqx.field(static=True, default=(1, 2))
    state_size: int = eqx.field(static=True, default=6)

    def __init__(self, input_size: int = 0, frozen: tuple[str, ...] = (), **values: float):
        init_constants(self, "Jansen-Rit", CONSTANTS, frozen, values)
        self.input_gain = input_gain(input_size, INPUT_SCALE)

    def sigmoid(self, v: Float[Array, "..."]) -> Float[Array, "..."]:
        """Return the firing rate (1/s) of a population whose mean membrane potential is `v` (mV)."""
        return 2.0 * self.e0.value / (1.0 + jnp.exp(self.r.value * (self.v0.value - v)))

    @staticmethod
    def output(x: Float[Array, "... 6"]) -> Float[Array, "..."]:
        """Return the pyramidal membrane potential `y1 - y2` (mV), the model's EEG signal."""
        return x[..., 1] - x[..., 2]

    def __call__(self, t, x: Float[Array, " 6"], u: Float[Array, " m"]) -> Float[Array, " 6"]:
        y0, y1, y2, y3, y4, y5 = (x[i] for i in range(6))
        A, B, a, b = self.A.value, self.B.value, self.a.value, self.b.value
        c1, c2, c3, c4 = (fraction * self.C.value for fraction in CONNECTIVITY_FRACTIONS)
        drive = self.p.value + jnp.dot(self.input_gain, u)

        dy3 = A * a * self.sigmoid(y1 - y2) - 2.0 * a * y3 - a**2 * y0
        dy4 = A * a * (drive + c2 * self.sigmoid(c1 * y0)) - 2.0 * a * y4 - a**2 * y1
        dy5 = B * b * c4 * self.sigmoid(c3 * y0) - 2.0 * b * y5 - b**2 * y2
        return jnp.stack([y3, y4, y5, dy3, dy4, dy5])
