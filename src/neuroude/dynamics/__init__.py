"""The process model: drifts and diffusions from white box to black box."""

from .hybrid import NeuralClosure, ResidualDrift
from .mechanistic import FitzHughNagumo
from .neural import AdditiveDiffusion, InputScaledDiffusion, MultiplicativeDiffusion, NetworkDiffusion, NeuralDrift
from .noise import ConvertedDrift, ito_stratonovich_correction, ito_to_stratonovich_drift, stratonovich_to_ito_drift
from .parameters import Constant, trainable_filter
from .sde import SDE

__all__ = [
    "SDE",
    "AdditiveDiffusion",
    "Constant",
    "ConvertedDrift",
    "FitzHughNagumo",
    "InputScaledDiffusion",
    "MultiplicativeDiffusion",
    "NetworkDiffusion",
    "NeuralClosure",
    "NeuralDrift",
    "ResidualDrift",
    "ito_stratonovich_correction",
    "ito_to_stratonovich_drift",
    "stratonovich_to_ito_drift",
    "trainable_filter",
]
