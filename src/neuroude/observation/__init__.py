"""Observation models: the likelihood of a recording given the latent path."""

from .gaussian import GaussianObservation
from .poisson import PoissonObservation

__all__ = ["GaussianObservation", "PoissonObservation"]
