"""Whole runs: load the data, fit, evaluate against baselines, draw figures, write the run folder.

These functions are what `neuroude fit`, `evaluate` and `sample` call, and
what a notebook calls to do the same from Python.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from . import plots
from .build import build_model, load_data
from .config import RunConfig, dump_config, load_config
from .distributed import initialize_distributed
from .decoding import head_prediction, head_test_prediction
from .errors import ConfigError, DataFileError
from .evaluate import evaluate, predict_recording
from .fused import can_fuse, fusion_warning
from .model import LatentUDE
from .observation import GaussianObservation, PoissonObservation, behaviour_statistics
from .reversible import stability_warning
from .runs import RunFolder, atomic_open, write_json, write_text
from .solve import ADAPTIVE_METHODS
from .streaming import can_stream
from .train import FitState, fit, kl_weight, load_trained, multiple_shooting, select_devices
from .uncertainty import check_run_settings, run_constant_intervals

logger = logging.getLogger("neuroude")


@dataclass
class Run:
    """A fitted run loaded from its folder."""

    folder: RunFolder
    config: RunConfig
    model: LatentUDE
    recording: object
    split: dict[str, list[int]]
    metrics: dict | None

    def summary(self) -> str:
        """Describe the run: folder, split sizes and held-out scores of the model and the baselines."""
        from .summary import describe_metrics

        sizes = ", ".join(f"{len(indices)} {name}" for name, indices in self.split.items())
        return "\n".join([
            f"Run in {self.folder.root}",
            f"  trials: {sizes}",
            f"  model: {self.model!r}",
            *("  " + line for line in describe_metrics(self.metrics).splitlines()),
        ])

    def __repr__(self) -> str:
        return f"Run({str(self.folder.root)!r}, model={self.model!r})"

    def _repr_html_(self) -> str:
        # Jupyter shows this instead of the repr.
        import html

        return f"<pre>{html.escape(self.summary())}</pre>"


def _attach_log_file(run: RunFolder) -> logging.Handler:
    handler = logging.FileHandler(run.log, mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    package_logger = logging.getLogger("neuroude")
    package_logger.addHandler(handler)
    # The file records progress messages; a lower level already chosen (such as debug) is kept.
    if package_logger.level == logging.NOTSET or package_logger.level > logging.INFO:
        package_logger.setLevel(logging.INFO)
    return handler


def _detach_log_file(handler: logging.Handler) -> None:
    logging.getLogger("neuroude").removeHandler(handler)
    handler.close()


def _differing_keys(saved: dict, given: dict, prefix: str = "") -> list[str]:
    """Return the dotted keys whose values differ between two configuration dictionaries."""
    keys = []
    for name in sorted(set(saved) | set(given)):
        key = f"{prefix}{name}"
        left, right = saved.get(name), given.get(name)
        if isinstance(left, dict) and isinstance(right, dict):
            keys.extend(_differing_keys(left, right, key + "."))
        elif left != right:
            keys.append(key)
    return keys


def _check_trial_length(recording, config: RunConfig) -> None:
    """Raise ConfigError when the trials are too short for the bins the model reads or the scores skip."""
    n_bins = recording.y.shape[1]
    if config.model.n_init_bins > n_bins:
        raise ConfigError(
            f"model.n_init_bins is {config.model.n_init_bins}, but the trials have {n_bins} bins; expected at most "
            f"{n_bins} bins read to infer the initial state"
        )
    if config.evaluation.skip_bins >= n_bins:
        raise ConfigError(
            f"evaluation.skip_bins is {config.evaluation.skip_bins}, but the trials have {n_bins} bins; expected "
            f"fewer than {n_bins}, so that some bins of each held-out trial are scored"
        )
    window = config.model.recognition_window
    if config.model.recognition == "window" and window > n_bins:
        # Such a window only adds parameters that read zeros. A window of 500 bins did not compile within 200 s.
        raise ConfigError(
            f"model.recognition_window is {window} bins, but the trials have {n_bins} bins; expected at most "
            f"{n_bins}, because the bins past a trial's end read as zeros"
        )
    multiple_shooting(config, n_bins)


def _segment_warning(config: RunConfig, n_bins: int) -> str | None:
    """Return a warning when one segment of `solver.checkpoint_bins` spans a whole trial, else None."""
    segment = config.solver.checkpoint_bins
    if segment == 0 or segment < n_bins:
        return None
    return (
        f"solver.checkpoint_bins is {segment}, not shorter than the trials ({n_bins} bins), so one segment spans "
        f"a whole trial and the backward pass stores every step; a few tens of bins keeps memory nearly flat"
    )


def _kl_warmup_warning(config: RunConfig) -> str | None:
    """Return a warning when training ends before the linear KL warm-up does, else None."""
    training = config.training
    if training.kl_schedule != "linear" or training.steps >= training.kl_warmup_steps:
        return None
    # The last training step is step `steps - 1`.
    final = kl_weight(max(training.steps - 1, 0), training)
    return (
        f"training.steps is {training.steps}, fewer than training.kl_warmup_steps ({training.kl_warmup_steps}), "
        f"so the KL weight beta ends at {final:.2f} instead of {training.kl_weight_max:g} and the fit never "
        f"optimises the full ELBO; lower training.kl_warmup_steps or train for more steps"
    )


def _adjoint_warning(config: RunConfig) -> str | None:
    """Return a warning when an adaptive solver uses the backsolve adjoint, else None."""
    solver = config.solver
    if solver.adjoint != "backsolve" or solver.method not in ADAPTIVE_METHODS:
        return None
    return (
        "solver.adjoint is 'backsolve', whose gradients took 60 to 81 times as long as 'checkpoint' in "
        "benchmarks/adjoint_speed.py; 'checkpoint' with solver.checkpoint_bins also needs less memory"
    )


def _split(recording, config: RunConfig) -> dict[str, list[int]]:
    train, validation, test = recording.split(config.data.split, seed=config.seed)
    return {"train": train.tolist(), "validation": validation.tolist(), "test": test.tolist()}


def _model_for(recording, config: RunConfig, split) -> LatentUDE:
    train = recording.select(split["train"])
    mean_count = float(train.y.mean())
    n_behaviour = 0 if recording.behaviour is None else recording.behaviour.shape[2]
    return build_model(
        config, recording.n_channels, recording.n_inputs, jax.random.PRNGKey(config.seed), mean_count,
        bin_width=recording.dt, n_behaviour=n_behaviour,
        has_masked_entries=recording.mask is not None and not bool(recording.mask.all()),
        behaviour_statistics=_behaviour_statistics(train, config),
    )


def _behaviour_statistics(train, config: RunConfig):
    """Return the training trials' behaviour means and standard deviations when the behaviour head standardises."""
    settings = config.model.behaviour
    if settings is None or not settings.standardize or train.behaviour is None:
        return None
    return behaviour_statistics(train.behaviour, train.behaviour_observed, train.metadata.get("behaviour_names"))


def fit_run(
    config: RunConfig,
    out: str | os.PathLike,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    steps: int | None = None,
) -> Run:
    """Fit the configured model and write a complete run folder at `out`.

    With `resume`, the configuration saved in `out` is used and `config` only
    matters through `steps`, which may extend the fit.
    """
    run = RunFolder(out)
    run.check_writable(resume, overwrite)
    if resume:
        saved = load_config(run.config, saved_run=True)
        ignored = _differing_keys(saved.model_dump(mode="json"), config.model_dump(mode="json"))
        if steps is not None:
            ignored = [key for key in ignored if key != "training.steps"]
        if ignored:
            logger.warning(
                "resuming with the configuration saved in %s; the given configuration differs in %s, which are "
                "ignored (--steps sets a new number of training steps)", run.config, ", ".join(ignored),
            )
        config = saved
    if steps is not None:
        config.training.steps = steps
    # The distributed runtime must start before building the model runs the first JAX computation.
    initialize_distributed(config.training)

    # Data and model are checked before anything is written, so bad input leaves no half-made run folder.
    recording = load_data(config)
    _check_trial_length(recording, config)
    split = _split(recording, config)
    model = _model_for(recording, config, split)
    check_run_settings(model, config)
    select_devices(config.training)
    run.prepare(resume=resume, overwrite=overwrite)

    handler = _attach_log_file(run)
    try:
        write_text(run.config, dump_config(config))
        logger.info("fitting %s to %s", type(model.sde.drift).__name__, recording.metadata.get("source", "recording"))
        shooting = config.solver.shooting_bins is not None
        warnings = (
            stability_warning(model, recording.y.shape[1], recording.dt),
            fusion_warning(model, shooting=shooting),
            _segment_warning(config, recording.y.shape[1]),
            _kl_warmup_warning(config),
            _adjoint_warning(config),
        )
        for warning in warnings:
            if warning is not None:
                logger.warning(warning)
        if not shooting and can_fuse(model):
            logger.info("training step fused into one reversible Heun integration: its memory does not grow with the bins")
        elif not shooting and can_stream(model):
            logger.info("training loss streamed over segments of %d bins", model.checkpoint_bins)
        result = fit(model, recording, config, split, run, resume=resume, quiet=quiet)
        metrics = write_evaluation(run, result.model, recording, split, config, result.state)
    finally:
        _detach_log_file(handler)
    return Run(run, config, result.model, recording, split, metrics)


def write_evaluation(run: RunFolder, model, recording, split, config: RunConfig, state: FitState | None) -> dict:
    """Evaluate on held-out trials, then write `metrics.json` and the figures.

    With `evaluation.constant_intervals: laplace`, `metrics.json` also gets a
    `constants` record: each learnable constant's estimate, std and interval.
    """
    key = jax.random.PRNGKey(config.seed + 1)
    metrics, test_prediction = evaluate(model, recording, split, config, key)
    if state is None and run.metrics.is_file():
        # Re-evaluating keeps the record of how the model was trained.
        previous = read_metrics(run.metrics)
        if "training" in previous:
            metrics["training"] = previous["training"]
    if state is not None:
        metrics["training"] = {
            "steps_run": state.step,
            "best_step": state.best_step,
            "stopped_early": state.stopped_early,
            "nonfinite_steps": state.nonfinite_total,
            "solver_failure_steps": state.solver_failures,
            "seconds": round(state.seconds, 1),
        }
    constants = run_constant_intervals(model, recording, split, config)
    if constants is not None:
        metrics["constants"] = constants
    write_json(run.metrics, metrics)
    logger.info("test metrics: %s", metrics["test"])

    test = recording.select(split["test"])
    metric_name = "bits per spike" if config.model.observation == "poisson" else "R^2"
    if state is not None and state.history:
        plots.plot_training(state.history, state.evaluations, run.figures / "training.png", metric_name)
    test_trials = split["test"]
    test_prediction["observation"] = config.model.observation
    plots.plot_predictions(test, test_prediction, run.figures / "heldout_predictions.png",
                           config.evaluation.skip_bins, test_trials)
    plots.plot_latents(test_prediction["paths"], test.ts, run.figures / "latent_paths.png", test_trials)
    if "behaviour_decoding" in metrics:
        plots.plot_calibration(metrics["behaviour_decoding"], run.figures / "behaviour_calibration.png")
    if model.behaviour is not None and test.behaviour is not None:
        plot_behaviour_figure(model, recording, split, config, run.figures / "behaviour.png",
                              test_prediction["behaviour_head"])
    return metrics


def plot_behaviour_figure(model, recording, split, config: RunConfig, path, prediction=None) -> Path:
    """Draw the test trials' recorded behaviour against the head's prediction on the paths metrics.json scores.

    `prediction` is the `behaviour_head` entry of the test predictions from `evaluate`. Without it,
    the scored paths are sampled again.
    """
    train, validation, test = (recording.select(split[name]) for name in ("train", "validation", "test"))
    if prediction is None:
        # evaluate() gives behaviour_decoding_scores this key.
        key = jax.random.fold_in(jax.random.PRNGKey(config.seed + 1), 2)
        prediction = head_test_prediction(model, train, validation, test, config.evaluation.n_samples, key)
    names = test.metadata.get("behaviour_names") or [f"behaviour_{index}" for index in range(test.behaviour.shape[2])]
    return plots.plot_behaviour(test, prediction, path, names, config.evaluation.skip_bins, split["test"])


def load_run(path: str | os.PathLike, checkpoint_name: str = "best") -> Run:
    """Load a fitted run: its configuration, data, split, model (`best` or `last` checkpoint) and metrics."""
    run = RunFolder(path)
    run.require_fitted()
    config = load_config(run.config, saved_run=True)
    recording = load_data(config)
    split = _split(recording, config)
    model, _ = load_trained(run, _model_for(recording, config, split), config, checkpoint_name)
    metrics = read_metrics(run.metrics) if run.metrics.is_file() else None
    return Run(run, config, model, recording, split, metrics)


def read_metrics(path: Path) -> dict:
    """Read a run's `metrics.json`, raising DataFileError naming the file when it is not a JSON object."""
    try:
        metrics = json.loads(path.read_text())
    except (ValueError, OSError) as error:
        raise DataFileError(
            f"{path} could not be read as JSON ({error}); expected the metrics written by `neuroude fit`. "
            "Delete it and run `neuroude evaluate` on the run folder to write it again."
        ) from None
    if not isinstance(metrics, dict):
        raise DataFileError(f"{path} contains a {type(metrics).__name__}; expected a JSON object of metrics")
    return metrics


def evaluate_run(path: str | os.PathLike) -> dict:
    """Recompute held-out metrics and figures of a fitted run from its best checkpoint."""
    run = load_run(path)
    handler = _attach_log_file(run.folder)
    try:
        logger.info("re-evaluating %s from its best checkpoint", run.folder.root)
        return write_evaluation(run.folder, run.model, run.recording, run.split, run.config, None)
    finally:
        _detach_log_file(handler)


SAMPLES_DESCRIPTION = (
    "expected: (trials, samples, time, channels) expected observations per prior sample "
    "(counts per bin for Poisson models); observations: the same shape, drawn from the observation model; "
    "paths: (trials, samples, time, latents) latent paths; y: (trials, time, channels) recorded data; "
    "u: (trials, time, inputs) stimulus, when recorded; ts: (time,) seconds; trials: indices in the recording; "
    "behaviour_mean: (trials, samples, time, behaviour variables) the behaviour head's expected behaviour on "
    "each path in `paths`, in the recording's units, when the model has a behaviour head; behaviour: (trials, "
    "time, behaviour variables) recorded behaviour, NaN where not observed, and behaviour_names: (behaviour "
    "variables,) their names, when recorded"
)


def sample_run(path: str | os.PathLike, n_samples: int = 32, split_name: str = "test", seed: int = 0) -> Path:
    """Write predictive samples of a split's trials to `samples_<split>.npz` in the run folder.

    The file's arrays are listed in `SAMPLES_DESCRIPTION`, which is also stored in it as `description`.
    """
    run = load_run(path)
    subset = run.recording.select(run.split[split_name])
    prediction = predict_recording(run.model, subset, jax.random.PRNGKey(seed), n_samples)
    observed = _sample_observations(run.model, prediction["samples"], seed)

    target = run.folder.root / f"samples_{split_name}.npz"
    arrays = {
        "expected": prediction["samples"],
        "observations": observed,
        "paths": prediction["paths"],
        "y": subset.y,
        "ts": subset.ts,
        "trials": np.asarray(run.split[split_name]),
        "description": np.asarray(SAMPLES_DESCRIPTION),
    }
    if subset.u is not None:
        arrays["u"] = subset.u
    arrays.update(_behaviour_arrays(run.model, subset, prediction["paths"]))
    with atomic_open(target, "wb") as stream:
        np.savez(stream, **arrays)
    return target


def _behaviour_arrays(model: LatentUDE, recording, paths: np.ndarray) -> dict[str, np.ndarray]:
    """Return the `behaviour*` arrays of a samples file: the head's prediction on `paths` and the recorded behaviour."""
    arrays = {}
    if model.behaviour is not None:
        arrays["behaviour_mean"] = head_prediction(model, paths).samples.astype(np.float32)
    if recording.behaviour is not None:
        arrays["behaviour"] = np.where(recording.behaviour_observed, recording.behaviour, np.nan).astype(np.float32)
        names = recording.metadata.get("behaviour_names") or [
            f"behaviour_{index}" for index in range(recording.behaviour.shape[2])
        ]
        arrays["behaviour_names"] = np.asarray(names, dtype=str)
    return arrays


def _sample_observations(model: LatentUDE, expected: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if isinstance(model.observation, GaussianObservation):
        scale = np.exp(np.asarray(model.observation.log_std))
        return (expected + scale * rng.standard_normal(expected.shape)).astype(np.float32)
    if isinstance(model.observation, PoissonObservation):
        return rng.poisson(expected).astype(np.float32)
    # The other observation models draw their own noise around the expected values.
    drawn = model.observation.sample_around(jax.random.PRNGKey(seed), jax.numpy.asarray(expected))
    return np.asarray(drawn, np.float32)
