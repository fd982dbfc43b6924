"""Validated run configuration: YAML on disk, pydantic models in memory.

Every section rejects unknown keys, naming the key, the keys allowed there and
the closest match. `RunConfig()` with no arguments is the packaged real-data
default: a latent SDE fitted to the locust auditory receptor recordings that
ship with nitime.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Literal, get_args

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .dynamics.mechanistic import MODELS, check_model_name, closure_terms
from .errors import ConfigError, DataFileError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    """Source of the recording and how it is cut into trials."""

    source: Literal["grasshopper", "npz"] = "grasshopper"
    path: str | None = Field(
        None, description="NPZ file in the canonical format, for source 'npz'; a relative path is read beside the config"
    )
    bin_width: float = Field(0.005, gt=0, description="seconds per bin (grasshopper only)")
    trial_duration: float = Field(1.0, gt=0, description="seconds per trial (grasshopper only)")
    split: tuple[float, float, float] = Field((0.6, 0.2, 0.2), description="train, validation, test fractions of trials")

    @model_validator(mode="after")
    def _check(self):
        if self.source == "npz" and not self.path:
            raise ValueError("data.path is missing; source 'npz' needs the path of an NPZ file")
        if any(fraction <= 0 for fraction in self.split) or abs(sum(self.split) - 1.0) > 1e-6:
            raise ValueError(f"data.split is {self.split}; expected three positive fractions that sum to 1")
        return self


class NetworkConfig(Section):
    """Whole-brain network: copies of one local model coupled through a structural connectivity matrix."""

    local: str = Field("stuart_landau", description="mechanistic model at each node; see `neuroude models`")
    connectivity: str = Field(..., description=".npy file of the (nodes, nodes) connectivity; relative to the config")
    coupling: Literal["diffusive", "additive"] = "diffusive"
    coupling_variable: int = Field(0, ge=0, description="local state read from the other nodes")
    target_variable: int | None = Field(None, ge=0, description="local state whose drift receives the coupling")
    global_coupling: float = Field(1.0, ge=0)
    heterogeneous: bool = Field(False, description="one set of local constants per node")
    node_inputs: bool | None = Field(None, description="input channel i drives node i only; default when sizes match")


def _check_model_field(field: str, name: str) -> None:
    try:
        check_model_name(name)
    except ConfigError as error:
        raise ValueError(f"{field} names an {error}") from None


class ModelConfig(Section):
    """The four modules."""

    latent_size: int = Field(4, ge=1)
    drift: str = Field("mlp", description="'mlp' (black box) or a mechanistic model name; see `neuroude models`")
    residual: bool = Field(False, description="add a residual network to a mechanistic drift (grey box)")
    network: NetworkConfig | None = Field(None, description="settings of drift 'network'")
    closure: str | None = Field(None, description="term of the mechanistic drift replaced by a network (grey box)")
    drift_width: int = Field(32, ge=1)
    drift_depth: int = Field(2, ge=1)
    drift_time_constant: float = Field(0.02, gt=0, description="seconds; time scale of the network drift")
    constants: dict[str, float] = Field(default_factory=dict, description="initial FitzHugh-Nagumo constants")
    frozen_constants: list[str] = Field(default_factory=list, description="FitzHugh-Nagumo constants kept fixed")
    residual_penalty: float = Field(0.0, ge=0)
    diffusion: Literal["additive", "multiplicative", "network", "input_scaled", "none"] = "additive"
    diffusion_scale: float = Field(0.3, gt=0, description="initial noise scale of additive diffusion")
    diffusion_uses_input: bool = False
    encoder: Literal["identity", "linear", "mlp"] = "mlp"
    encoder_size: int = Field(8, ge=1)
    interpolation: Literal["hold", "linear"] = "linear"
    recognition_hidden: int = Field(64, ge=1)
    context_size: int = Field(16, ge=1)
    correction_width: int = Field(64, ge=1)
    n_init_bins: int = Field(10, ge=1, description="bins read to infer the initial state")
    observation: Literal["poisson", "gaussian"] = "poisson"
    link: Literal["exp", "softplus"] = "exp"
    observed_states: Literal["all", "model"] | list[int] = Field(
        "all", description="latent states the readout sees: all, the mechanistic model's observable ones, or indices"
    )

    @model_validator(mode="after")
    def _check(self):
        if self.closure is not None:
            self._check_closure()
        if self.drift == "network":
            if self.network is None:
                raise ValueError("model.network is missing; drift 'network' needs its local model and connectivity")
            _check_model_field("model.network.local", self.network.local)
            if MODELS[self.network.local].state_size is None:
                raise ValueError(f"model.network.local {self.network.local!r} has no fixed size; choose a fixed-size model")
            return self
        if self.drift == "mlp":
            if self.residual:
                raise ValueError("model.residual needs a mechanistic drift; the 'mlp' drift is a network already")
            return self
        _check_model_field("model.drift", self.drift)
        state_size = MODELS[self.drift].state_size
        if state_size is not None and state_size != self.latent_size:
            raise ValueError(
                f"model.latent_size is {self.latent_size}; the {self.drift} drift has {state_size} states"
            )
        return self

    def _check_closure(self) -> None:
        if self.drift in ("mlp", "network"):
            raise ValueError(f"model.closure needs a mechanistic drift; model.drift is {self.drift!r}")
        if self.residual:
            raise ValueError("model.closure and model.residual cannot be combined; choose one grey-box form")
        terms = closure_terms(self.drift)
        if self.closure not in terms:
            raise ValueError(
                f"model.closure is {self.closure!r}; the {self.drift} drift has the closure terms {sorted(terms)}"
            )


class SolverConfig(Section):
    method: Literal["euler", "heun", "tsit5", "dopri5", "kvaerno5"] = "euler"
    n_substeps: int = Field(2, ge=1, description="solver steps per data bin (fixed-step methods)")
    adjoint: Literal["checkpoint", "backsolve"] = "checkpoint"
    rtol: float = Field(1e-4, gt=0)
    atol: float = Field(1e-6, gt=0)
    max_state: float = Field(
        1e6, gt=0, description="bound on |latent state| at bin times; a training step whose path exceeds it is skipped"
    )


class TrainingConfig(Section):
    steps: int = Field(1500, ge=1)
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = Field(50, ge=0)
    weight_decay: float = Field(1e-4, ge=0)
    clip_norm: float = Field(10.0, gt=0)
    kl_schedule: Literal["linear", "cyclical", "constant"] = "linear"
    kl_warmup_steps: int = Field(300, ge=0, description="steps to raise beta from 0 to 1; the cycle length if cyclical")
    n_samples: int = Field(1, ge=1, description="Monte-Carlo paths per trial in the ELBO")
    eval_every: int = Field(50, ge=1)
    patience: int = Field(8, ge=1, description="evaluations without improvement before stopping early")
    checkpoint_every: int = Field(100, ge=1)
    max_nonfinite: int = Field(20, ge=1, description="non-finite steps in a row before the fit stops")
    nonfinite_lr_factor: float = Field(
        0.5, gt=0, le=1, description="learning rate multiplier applied after each skipped non-finite step; 1 keeps it"
    )
    devices: int | None = Field(
        None, ge=1, description="number of local devices to use, the first ones listed by JAX; None uses all"
    )


class EvaluationConfig(Section):
    n_samples: int = Field(32, ge=1, description="prior paths per trial for predictions")
    skip_bins: int = Field(10, ge=0, description="first bins of each held-out trial left out of every score")
    glm_lags: int = Field(20, ge=1, description="stimulus bins in the GLM baseline's history")


class RunConfig(Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    solver: SolverConfig = Field(default_factory=SolverConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    seed: int = 0

    @model_validator(mode="after")
    def _check(self):
        if self.evaluation.skip_bins < self.model.n_init_bins:
            raise ValueError(
                f"evaluation.skip_bins is {self.evaluation.skip_bins}, below model.n_init_bins "
                f"{self.model.n_init_bins}; the bins used to infer the initial state must not be scored"
            )
        if self.solver.method in ("tsit5", "dopri5", "kvaerno5") and self.model.diffusion != "none":
            raise ValueError(
                f"solver.method {self.solver.method!r} integrates ODEs only; set model.diffusion to 'none' "
                "or use method 'euler' or 'heun'"
            )
        return self


def _as_section(annotation) -> type[BaseModel] | None:
    # An optional section such as `NetworkConfig | None` names its model among the union's members.
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _section_model(location: tuple) -> type[BaseModel]:
    model: type[BaseModel] = RunConfig
    for part in location:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        section = _as_section(field.annotation) if field is not None else None
        if section is None:
            break
        model = section
    return model


def _format_error(error: dict) -> str:
    location = tuple(error["loc"])
    dotted = ".".join(str(part) for part in location)
    if error["type"] == "extra_forbidden":
        section = _section_model(location[:-1])
        allowed = sorted(section.model_fields)
        guess = difflib.get_close_matches(str(location[-1]), allowed, n=1)
        hint = f" Did you mean {guess[0]!r}?" if guess else ""
        return f"unknown config key {dotted!r}; allowed keys here: {', '.join(allowed)}.{hint}"
    message = error["msg"].removeprefix("Value error, ")
    if not dotted:
        return message
    if isinstance(error.get("input"), dict):
        return f"{dotted}: {message}"
    return f"{dotted}: {message} (got {error.get('input')!r})"


def parse_config(raw: dict | None) -> RunConfig:
    """Validate a dictionary (from YAML) into a RunConfig, raising ConfigError with every problem."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"the configuration is a {type(raw).__name__}; expected a mapping of sections")
    try:
        return RunConfig.model_validate(raw)
    except pydantic.ValidationError as error:
        problems = [_format_error(item) for item in error.errors()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None


def load_config(path: str | os.PathLike) -> RunConfig:
    """Read and validate a YAML run configuration."""
    path = Path(path)
    if path.is_dir():
        raise DataFileError(f"config path {path} is a directory; expected a YAML file")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataFileError(f"config file {path} not found; expected an existing YAML file") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path} is not UTF-8 text ({error.reason}); expected a YAML file") from None
    except OSError as error:
        raise DataFileError(
            f"config file {path} could not be read: {error.strerror}; expected a readable file"
        ) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    config = parse_config(raw)
    _resolve_data_path(config, path.parent)
    return config


def _resolve_beside(path: str, folder: Path) -> str:
    # A relative path names a file beside the config, wherever the command is run from. Every path is
    # resolved, so `..` and symbolic links are gone from the saved config and the error messages.
    expanded = Path(path).expanduser()
    return str((expanded if expanded.is_absolute() else folder / expanded).resolve())


def _resolve_data_path(config: RunConfig, folder: Path) -> None:
    if config.data.path is not None:
        config.data.path = _resolve_beside(config.data.path, folder)
    if config.model.network is not None:
        config.model.network.connectivity = _resolve_beside(config.model.network.connectivity, folder)


def dump_config(config: RunConfig) -> str:
    """Return the fully resolved configuration as YAML text."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
