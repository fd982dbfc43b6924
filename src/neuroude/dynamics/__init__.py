"""The process model: drifts and diffusions from white box to black box."""

from .hybrid import ResidualDrift
from .mechanistic import FitzHughNagumo
from .neural import AdditiveDiffusion, InputScaledDiffusion, NetworkDiffusion, NeuralDrift
from .parameters import Constant, trainable_filter
from .sde import SDE

__all__ = [
    "SDE",
    "AdditiveDiffusion",
    "Constant",
    "FitzHughNagumo",
    "InputScaledDiffusion",
    "NetworkDiffusion",
    "NeuralDrift",
    "ResidualDrift",
    "trainable_filter",
]
