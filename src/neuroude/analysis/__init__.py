"""Dynamical-systems analysis of a drift `f(x, u)` or of a fitted LatentUDE, and symbolic recovery of learned terms."""

from . import continuation
from . import fitted
from . import fixed_points
from . import noise
from . import phase
from . import regimes
from . import report
from . import symbolic
