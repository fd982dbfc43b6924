"""Observation models: the likelihood of a recording given the latent path."""

from .behaviour import BehaviourHead, behaviour_statistics
from .bernoulli import BernoulliObservation
from .bold import BoldObservation
from .calcium import CalciumObservation
from .checks import check_recording
from .gaussian import GaussianObservation
from .grouped import GroupedObservation
from .negative_binomial import NegativeBinomialObservation
from .poisson import PoissonObservation

__all__ = [
    "BehaviourHead",
    "BernoulliObservation",
    "BoldObservation",
    "CalciumObservation",
    "GaussianObservation",
    "GroupedObservation",
    "NegativeBinomialObservation",
    "PoissonObservation",
    "behaviour_statistics",
    "check_recording",
]
