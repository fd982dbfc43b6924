"""Build a LatentUDE from a validated configuration and the recording's sizes."""

from __future__ import annotations

import jax
import numpy as np
from jaxtyping import PRNGKeyArray

from .config import ModelConfig, RunConfig
from .constant_posterior import attach_constant_posterior
from .dynamics import (
    SDE,
    AdditiveDiffusion,
    InputScaledDiffusion,
    MultiplicativeDiffusion,
    NeuralClosure,
    NetworkDiffusion,
    NeuralDrift,
    ResidualDrift,
)
from .dynamics.mechanistic import MODELS, make_mechanistic
from .dynamics.mechanistic.delays import check_fibre_lengths
from .dynamics.mechanistic.network import BrainNetwork, check_connectivity
from .errors import ConfigError, DataError, DataFileError
from .metrics import heldout_channel_split
from .model import LatentUDE
from .observation import (
    BehaviourHead,
    BernoulliObservation,
    BoldObservation,
    CalciumObservation,
    GaussianObservation,
    GroupedObservation,
    NegativeBinomialObservation,
    PoissonObservation,
    check_recording,
)
from .recognition import GRURecognition, WindowRecognition
from .stimulus import make_encoder


def _drift(config: ModelConfig, input_size: int, key: PRNGKeyArray):
    if config.drift == "mlp":
        return NeuralDrift(
            config.latent_size, input_size, config.drift_width, config.drift_depth, config.drift_time_constant, key=key
        )

    key_mechanistic, key_residual = jax.random.split(key)
    if config.drift == "network":
        mechanistic = _network(config, input_size, key_mechanistic)
    else:
        mechanistic = make_mechanistic(
            config.drift, config.latent_size, input_size, tuple(config.frozen_constants), config.constants,
            key=key_mechanistic,
        )
    if config.closure is not None:
        return NeuralClosure(mechanistic, config.closure, config.drift_width, config.drift_depth, key=key_residual)
    if not config.residual:
        return mechanistic
    return ResidualDrift(
        mechanistic, input_size, config.drift_width, config.drift_depth, config.residual_penalty, key=key_residual
    )


def _network(config: ModelConfig, input_size: int, key: PRNGKeyArray) -> BrainNetwork:
    settings = config.network
    connectivity = load_connectivity(settings.connectivity)
    local_size = MODELS[settings.local].state_size
    expected = connectivity.shape[0] * local_size
    if config.latent_size != expected:
        raise ConfigError(
            f"model.latent_size is {config.latent_size}; a network of {connectivity.shape[0]} {settings.local} "
            f"nodes with {local_size} states each has {expected}, so set model.latent_size to {expected}"
        )
    lengths = None
    if settings.fibre_lengths is not None:
        lengths = load_fibre_lengths(settings.fibre_lengths, connectivity.shape[0])
    return BrainNetwork.from_registry(
        settings.local, connectivity, input_size, key,
        coupling_variable=settings.coupling_variable, coupling=settings.coupling,
        global_coupling=settings.global_coupling, frozen=tuple(config.frozen_constants),
        heterogeneous=settings.heterogeneous, target_variable=settings.target_variable,
        node_inputs=settings.node_inputs, fibre_lengths=lengths, conduction_speed=settings.conduction_speed,
        min_conduction_speed=settings.min_conduction_speed, **config.constants,
    )


def load_fibre_lengths(path: str, n_nodes: int) -> np.ndarray:
    """Read and check (nodes, nodes) fibre lengths in mm from a .npy file."""
    try:
        lengths = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataFileError(f"fibre lengths file {path} not found") from None
    except (ValueError, OSError) as error:
        raise DataFileError(f"fibre lengths file {path} is not a readable .npy array: {error}") from None

    if lengths.shape != (n_nodes, n_nodes):
        raise ConfigError(
            f"fibre lengths file {path} has shape {lengths.shape}; expected ({n_nodes}, {n_nodes}), "
            "the shape of the connectivity"
        )
    try:
        return check_fibre_lengths(lengths)
    except ConfigError as error:
        raise ConfigError(f"fibre lengths file {path}: {error}") from None


def load_connectivity(path: str) -> np.ndarray:
    """Read a (nodes, nodes) connectivity matrix from a .npy file (no pickled objects)."""
    try:
        matrix = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataFileError(f"connectivity file {path} not found") from None
    except (ValueError, OSError) as error:
        raise DataFileError(f"connectivity file {path} is not a readable .npy array: {error}") from None
    return check_connectivity(matrix)


def _diffusion(config: ModelConfig, input_size: int, key: PRNGKeyArray):
    if config.diffusion == "none":
        return None
    if config.diffusion == "additive":
        return AdditiveDiffusion(config.latent_size, config.diffusion_scale)
    if config.diffusion == "multiplicative":
        return MultiplicativeDiffusion(config.latent_size, config.diffusion_scale)
    if config.diffusion == "input_scaled":
        return InputScaledDiffusion(config.latent_size, input_size, config.diffusion_scale)
    return NetworkDiffusion(
        config.latent_size, input_size, uses_input=config.diffusion_uses_input, max_scale=2 * config.diffusion_scale,
        key=key,
    )


def _observed_states(config: ModelConfig, drift) -> tuple[int, ...] | None:
    if config.observed_states == "all":
        return None
    if config.observed_states == "model":
        # Grey-box wrappers expose the observable states of the mechanistic model inside them.
        mechanistic = getattr(drift, "mechanistic", drift)
        observable = getattr(mechanistic, "observable", None)
        if observable is None:
            raise ConfigError(
                f"model.observed_states is 'model', but the {config.drift} drift names no observable states; "
                "use 'all' or a list of indices"
            )
        return tuple(observable)
    return tuple(config.observed_states)


def _observation(
    config: ModelConfig, readout_size: int, n_channels: int, mean_count: float, bin_width: float | None, key
):
    if config.observation != "grouped":
        return _single_observation(config.observation, config, readout_size, n_channels, mean_count, bin_width, key)

    # NOTE: every group's readout starts at the mean over all channels, not over the group's own channels.
    groups = [
        _single_observation(
            group.observation, config, readout_size, len(group.channels), mean_count, bin_width,
            jax.random.fold_in(key, index),
        )
        for index, group in enumerate(config.channel_groups)
    ]
    return GroupedObservation(groups, [group.channels for group in config.channel_groups], n_channels)


def _single_observation(
    kind: str, config: ModelConfig, readout_size: int, n_channels: int, mean_count: float, bin_width: float | None,
    key,
):
    settings = config.observation_settings
    if kind in ("calcium", "bold") and bin_width is None:
        raise ConfigError(f"the {kind} observation model needs the recording's bin width; pass bin_width to build_model")
    if kind == "poisson":
        return PoissonObservation(readout_size, n_channels, config.link, max(mean_count, 1e-3), key=key)
    if kind == "negative_binomial":
        return NegativeBinomialObservation(
            readout_size, n_channels, config.link, max(mean_count, 1e-3), settings.dispersion, key=key
        )
    if kind == "bernoulli":
        return BernoulliObservation(readout_size, n_channels, min(max(mean_count, 1e-3), 1 - 1e-3), key=key)
    if kind == "calcium":
        return CalciumObservation(readout_size, n_channels, bin_width, settings.calcium_decay_time, key=key)
    if kind == "bold":
        return BoldObservation(readout_size, n_channels, bin_width, settings.bold_substeps, key=key)
    return GaussianObservation(readout_size, n_channels, key=key)


def _recognition(config: ModelConfig, observation_size: int, drive_size: int, location, scale, key):
    """Build the recognition model that `model.recognition` names."""
    shared = (observation_size, drive_size, config.latent_size, config.recognition_hidden, config.context_size,
              config.n_init_bins)
    if config.recognition == "window":
        return WindowRecognition(
            *shared, config.recognition_window, key=key, state_location=location, state_scale=scale
        )
    return GRURecognition(*shared, key=key, state_location=location, state_scale=scale)


def _behaviour_head(config: ModelConfig, n_behaviour: int, statistics, key) -> BehaviourHead | None:
    if config.behaviour is None:
        return None
    if n_behaviour < 1:
        raise DataError(
            "model.behaviour is set, but the recording has no behaviour variables (n_behaviour is 0); "
            "add behaviour to the recording or remove model.behaviour"
        )
    # The head reads the whole latent state: behaviour may depend on states the neural readout does not see.
    return BehaviourHead(config.latent_size, n_behaviour, statistics if config.behaviour.standardize else None, key=key)


def build_model(
    config: RunConfig,
    n_channels: int,
    n_inputs: int,
    key: PRNGKeyArray,
    mean_count: float = 0.1,
    bin_width: float | None = None,
    n_behaviour: int = 0,
    has_masked_entries: bool = False,
    behaviour_statistics: tuple | None = None,
) -> LatentUDE:
    """Build the model described by `config` for a recording with `n_channels` outputs and `n_inputs` stimuli.

    `mean_count` (expected counts per bin, or the fraction of ones for Bernoulli
    data) initialises the readout's offset. `bin_width` (seconds) is required by
    the calcium and bold observation models, and `n_behaviour` (behaviour
    variables) by a configured behaviour head. `behaviour_statistics`, the pair (means,
    standard deviations) of `observation.behaviour_statistics` on the training trials,
    standardises that head under `model.behaviour.standardize`; without it the head fits
    the raw values. `has_masked_entries` (the recording's mask
    has a False entry) and `training.coordinated_dropout > 0` turn on the recognition
    model's mask input under `model.recognition_mask: auto`.
    """
    model_config = config.model
    keys = jax.random.split(key, 6)

    encoder_kind = model_config.encoder if n_inputs > 0 else "identity"
    encoder = make_encoder(encoder_kind, n_inputs, model_config.encoder_size, key=keys[0])
    drive_size = encoder.output_size

    heldin = _heldin_channels(config, n_channels)
    recognition_size = n_channels if heldin is None else len(heldin)
    # Coordinated dropout hides entries through the mask, so `auto` turns the mask input on for it too.
    needs_mask = has_masked_entries or config.training.coordinated_dropout > 0
    reads_mask = needs_mask if model_config.recognition_mask == "auto" else model_config.recognition_mask
    if reads_mask:
        # One mask column per channel read, beside the masked values.
        recognition_size *= 2
    sde = SDE(_drift(model_config, drive_size, keys[2]), _diffusion(model_config, drive_size, keys[3]))
    location, scale = _initial_state_prior(sde.drift)
    recognition = _recognition(model_config, recognition_size, drive_size, location, scale, keys[1])

    observed_states = _observed_states(model_config, sde.drift)
    readout_size = model_config.latent_size if observed_states is None else len(observed_states)
    observation = _observation(model_config, readout_size, n_channels, mean_count, bin_width, keys[4])
    # A key folded from `key`, so adding the head leaves every other module's initialisation unchanged.
    behaviour = _behaviour_head(model_config, n_behaviour, behaviour_statistics, jax.random.fold_in(key, 6))

    model = LatentUDE(
        encoder, recognition, sde, observation, model_config.latent_size, model_config.context_size,
        model_config.correction_width, config.solver.method, config.solver.n_substeps, model_config.interpolation,
        config.solver.adjoint, config.solver.rtol, config.solver.atol, observed_states, heldin, key=keys[5],
        checkpoint_bins=config.solver.checkpoint_bins, recognition_reads_mask=reads_mask,
        behaviour=behaviour, behaviour_weight=model_config.behaviour.weight if behaviour is not None else 1.0,
    )
    if model_config.constant_posterior != "point":
        full_covariance = model_config.constant_posterior == "variational_full"
        model = attach_constant_posterior(model, model_config.constant_priors, full_covariance=full_covariance)
    return model


def _initial_state_prior(drift) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """Return the location and scale of the x0 prior that a mechanistic drift declares, or (None, None) for N(0, I)."""
    mechanistic = getattr(drift, "mechanistic", drift)
    prior = getattr(mechanistic, "initial_state_prior", None)
    if prior is None:
        return None, None
    location, scale = prior()
    return tuple(float(value) for value in location), tuple(float(value) for value in scale)


def _heldin_channels(config: RunConfig, n_channels: int) -> tuple[int, ...] | None:
    if config.data.heldout_neurons is None:
        return None
    try:
        heldin, _ = heldout_channel_split(config.data.heldout_neurons, n_channels)
    except ConfigError as error:
        raise ConfigError(f"data.{error}") from None
    return heldin


def load_data(config: RunConfig):
    """Load the recording the configuration names and check it fits the observation model."""
    from .data import load_grasshopper, load_hcp_bold, load_recording
    from .data.loaders import config_options

    data_config = config.data
    if data_config.source == "grasshopper":
        recording = load_grasshopper(bin_width=data_config.bin_width, trial_duration=data_config.trial_duration)
    elif data_config.source == "hcp":
        recording = load_hcp_bold(folder=data_config.path)
    else:
        options = config_options(data_config.source, data_config.bin_width, data_config.read.model_dump())
        recording = load_recording(data_config.path, format=data_config.source, **options)

    try:
        check_recording(
            recording, config.model.observation, config.model.behaviour is not None, config.model.channel_groups
        )
        _check_uniform_bins(recording.ts)
    except DataError as error:
        source = {"grasshopper": "the receptor-neuron recording", "hcp": "the HCP BOLD sample"}.get(
            data_config.source, data_config.path
        )
        raise DataError(f"{source}: {error}") from None
    return recording


def _check_uniform_bins(ts) -> None:
    widths = np.diff(ts)
    if widths.size and not np.allclose(widths, widths[0], rtol=1e-6, atol=0.0):
        raise DataError(
            f"ts has bins of different widths (from {widths.min():g} s to {widths.max():g} s); "
            "expected evenly spaced bins, which the solvers integrate between"
        )
