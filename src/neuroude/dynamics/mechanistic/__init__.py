"""White-box drifts: mechanistic models with named, constrained constants.

`MODELS` maps each model's config name to its class and state size (None for
models whose size is chosen by the user, such as a rate network of N units).
"""

from __future__ import annotations

import difflib
import inspect
import sys
from typing import NamedTuple

from ...errors import ConfigError
from .fitzhugh_nagumo import FitzHughNagumo
from .hodgkin_huxley import HodgkinHuxley
from .izhikevich import Izhikevich
from .jansen_rit import JansenRit
from .kuramoto import Kuramoto
from .linear import LinearDynamics
from .lorenz import Lorenz
from .morris_lecar import MorrisLecar
from .network import NETWORK_CONSTANTS, BrainNetwork
from .rate_network import RateNetwork
from .stuart_landau import StuartLandau
from .van_der_pol import VanDerPol
from .wilson_cowan import WilsonCowan


class ModelEntry(NamedTuple):
    cls: type
    state_size: int | None


MODELS: dict[str, ModelEntry] = {
    "fitzhugh_nagumo": ModelEntry(FitzHughNagumo, 2),
    "hodgkin_huxley": ModelEntry(HodgkinHuxley, 4),
    "morris_lecar": ModelEntry(MorrisLecar, 2),
    "izhikevich": ModelEntry(Izhikevich, 3),
    "wilson_cowan": ModelEntry(WilsonCowan, 2),
    "rate_network": ModelEntry(RateNetwork, None),
    "jansen_rit": ModelEntry(JansenRit, 6),
    "linear": ModelEntry(LinearDynamics, None),
    "stuart_landau": ModelEntry(StuartLandau, 2),
    "kuramoto": ModelEntry(Kuramoto, None),
    "lorenz": ModelEntry(Lorenz, 3),
    "van_der_pol": ModelEntry(VanDerPol, 2),
}


def check_model_name(name: str) -> None:
    """Raise ConfigError unless `name` is a registered mechanistic model."""
    if name in MODELS:
        return
    guess = difflib.get_close_matches(name, list(MODELS), n=1)
    hint = f" Did you mean {guess[0]!r}?" if guess else ""
    raise ConfigError(f"unknown mechanistic model {name!r}; expected one of {sorted(MODELS)}.{hint}")


def make_mechanistic(
    name: str, latent_size: int, input_size: int, frozen: tuple[str, ...], constants: dict[str, float], *, key
):
    """Build the mechanistic model `name` with `latent_size` states, raising ConfigError on a size mismatch."""
    check_model_name(name)
    entry = MODELS[name]
    if entry.state_size is not None and entry.state_size != latent_size:
        raise ConfigError(
            f"model.latent_size is {latent_size}; the {name} drift has {entry.state_size} states, "
            f"so set model.latent_size to {entry.state_size}"
        )

    parameters = inspect.signature(entry.cls).parameters
    sized = {"size": latent_size, "key": key} if "size" in parameters else {}
    return entry.cls(input_size, frozen=frozen, **sized, **constants)


def closure_terms(name: str) -> dict[str, str]:
    """Return the terms of model `name` that a neural closure may replace, with their descriptions."""
    check_model_name(name)
    return dict(getattr(sys.modules[MODELS[name].cls.__module__], "TERMS", {}))


def describe_models() -> str:
    """Return a table of every mechanistic model with its state size and constants."""
    lines = []
    for name, entry in MODELS.items():
        size = "chosen by model.latent_size" if entry.state_size is None else str(entry.state_size)
        lines.append(f"{name} ({entry.cls.__name__}), states: {size}")
        specs = getattr(sys.modules[entry.cls.__module__], "CONSTANTS", {})
        for constant, spec in specs.items():
            unit = f" {spec.unit}" if spec.unit else ""
            lines.append(f"    {constant:<14s} default {spec.value:g}{unit}, {spec.transform}")
        for term, description in closure_terms(name).items():
            lines.append(f"    closure term {term!r}: {description}")

    lines.append("network (BrainNetwork), states: nodes x local states; drift 'network' with model.network")
    for constant, spec in NETWORK_CONSTANTS.items():
        lines.append(f"    {constant:<14s} default {spec.value:g} {spec.unit}, {spec.transform}")
    return "\n".join(lines)


__all__ = [
    "MODELS",
    "BrainNetwork",
    "FitzHughNagumo",
    "HodgkinHuxley",
    "Izhikevich",
    "JansenRit",
    "Kuramoto",
    "LinearDynamics",
    "Lorenz",
    "MorrisLecar",
    "RateNetwork",
    "StuartLandau",
    "VanDerPol",
    "WilsonCowan",
    "check_model_name",
    "closure_terms",
    "describe_models",
    "make_mechanistic",
]
