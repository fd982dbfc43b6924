"""White-box drifts: mechanistic models with named, constrained constants."""

from .fitzhugh_nagumo import FitzHughNagumo

__all__ = ["FitzHughNagumo"]
