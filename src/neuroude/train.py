"""Fitting loop: AdamW with clipping and a learning-rate schedule, KL annealing, minibatches,
early stopping on the validation metric, atomic checkpoints and exact resumption.

With more than one local device, each minibatch's trials are split over a 1-D
device mesh and the parameters and optimiser state are replicated. The same
jitted step then runs data parallel through XLA's SPMD partitioner.

Each step's randomness (minibatch and noise) is derived from the seed and the
step number alone, so a fit that is interrupted and resumed from its last
checkpoint ends exactly where an uninterrupted fit with the same seed ends.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
import time
from dataclasses import dataclass, field

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .config import RunConfig, TrainingConfig
from .constant_posterior import posterior_penalty
from .diagnose import locate_nonfinite
from .distributed import initialize_distributed
from .dynamics.parameters import trainable_filter
from .errors import ConfigError, DataFileError, RunFolderError, TrainingError
from .evaluate import validation_metric
from .model import LatentUDE
from .observation.checks import check_behaviour, warn_behaviour_scale
from .precision import cast_floating, precision_dtype
from .progress import FitProgress
from .runs import RunFolder, load_checkpoint, save_checkpoint, write_text
from .shooting import MultipleShooting
from .tensorboard import open_tensorboard
from .uncertainty import constant_prior, prior_penalty

logger = logging.getLogger("neuroude")

TERM_NAMES = ("loss", "log_likelihood", "kl_initial", "kl_path", "residual_penalty")

# Runtime errors that diffrax, lineax and optimistix raise through `equinox.error_if`. `eqx.filter_jit`
# re-raises them as `EquinoxRuntimeError`. An error that surfaces outside it (when an array of the step
# is read later) is a `JaxRuntimeError` whose text contains `_EquinoxRuntimeError: <message>`.
SOLVER_ERRORS = (eqx.EquinoxRuntimeError, jax.errors.JaxRuntimeError)
_EQUINOX_MESSAGE = re.compile(r"EquinoxRuntimeError: (.+?)(?:\n\s*\n|$)", re.DOTALL)


def solver_failure_message(error: BaseException) -> str | None:
    """Return the first paragraph of a solver's Equinox runtime error on one line, or None for any other error.

    An implicit solver (Kvaerno5) raises such an error when a Newton step's linear solve
    meets a non-finite value, which lineax turns into an error rather than a NaN, or when
    diffrax reaches its step limit. neuroude itself raises none through Equinox, so every
    match comes from a solver.
    """
    if not isinstance(error, SOLVER_ERRORS):
        return None
    match = _EQUINOX_MESSAGE.search(str(error))
    if match is None:
        return None
    return " ".join(match.group(1).split())


def kl_weight(step: int, config: TrainingConfig) -> float:
    """Return beta at `step`: linear warm-up from 0, a repeating linear ramp (cyclical), or constant.

    Beta rises to `config.kl_weight_max`, which is 1 unless set lower.
    """
    return config.kl_weight_max * _kl_ramp(step, config)


def _kl_ramp(step: int, config: TrainingConfig) -> float:
    if config.kl_schedule == "constant" or config.kl_warmup_steps == 0:
        return 1.0
    if config.kl_schedule == "linear":
        return min(1.0, step / config.kl_warmup_steps)
    cycle_position = step % config.kl_warmup_steps
    # Each cycle ramps beta up over its first half and keeps it at 1 for the second.
    return min(1.0, 2.0 * cycle_position / config.kl_warmup_steps)


def learning_rate_schedule(config: TrainingConfig) -> optax.Schedule:
    """Return the learning rate as a function of the optimiser's update count (0 for the first step)."""
    if config.lr_schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, config.learning_rate, max(config.warmup_steps, 1), max(config.steps, config.warmup_steps + 1),
            end_value=config.learning_rate * 0.05,
        )
    return optax.linear_schedule(0.0, config.learning_rate, max(config.warmup_steps, 1))


def make_optimizer(config: TrainingConfig) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(config.clip_norm),
        optax.adamw(learning_rate_schedule(config), weight_decay=config.weight_decay),
    )


def coordinated_dropout_masks(
    step_key: jax.Array, mask: jax.Array, rate: float, heldin_channels: tuple[int, ...] | None
) -> tuple[jax.Array, jax.Array]:
    """Return the mask the recognition model reads and the weights of the scored likelihood under coordinated dropout.

    Each observed entry of a held-in channel (every channel when `heldin_channels` is None) is
    hidden from the recognition model with probability `rate`, independently per trial, bin
    and channel, and only the hidden ones are scored. The model then cannot lower the loss by
    passing an entry from its input to its output, and must predict each entry from the
    others. Held-out channels are never read, so all their observed entries are scored,
    with weight 1.

    Both masks are scaled so that their expectation is the plain mask. A kept entry is read
    with weight `1 / (1 - rate)`, so the recognition model's input `concat(y * m, m)` has
    on average the values it has in evaluation, where every entry is read with weight 1.
    A hidden entry is scored with weight `1 / rate`, so the expected log likelihood, and
    with it the balance against the KL, is that of the full data. The draw uses a key
    folded from the training step's key `step_key`, so the paths' noise is the same as
    without dropout.
    """
    hidden = jax.random.bernoulli(jax.random.fold_in(step_key, 1), rate, mask.shape).astype(mask.dtype)
    reads, scored = mask * (1 - hidden) / (1 - rate), mask * hidden / rate
    if heldin_channels is not None:
        is_heldin = jnp.zeros(mask.shape[-1], bool).at[jnp.asarray(heldin_channels)].set(True)
        scored = jnp.where(is_heldin, scored, mask)
    return reads, scored


def make_train_step(
    static, optimizer, t0: float, bin_width: float, n_samples: int, skip_nonfinite: bool = True,
    max_state: float = math.inf, penalty=None, shooting: MultipleShooting | None = None,
    coordinated_dropout: float = 0.0,
):
    """Return the jitted training step: loss, gradient and optimiser update, all in one XLA program.

    The step multiplies the optimiser's update by `lr_scale`, which scales the
    learning rate (weight decay included) without rebuilding the optimiser.
    A step counts as failed when its loss or gradient is not finite, or when a
    latent path exceeds `max_state` in absolute value at a bin time (a solver
    blow-up); `terms` then carry `state_bound_exceeded` with the first batch
    trial and bin beyond the bound. With `skip_nonfinite`, a failed step leaves
    the parameters and optimiser state unchanged. `penalty(model)`, when given,
    is added to the loss (the constants' prior, see `uncertainty.prior_penalty`). `shooting`, when
    given, integrates the paths in segments and adds their continuity penalty (see `neuroude.shooting`).
    `coordinated_dropout > 0` hides that fraction of the recognition model's input entries in each
    step and scores only those, reweighted (see `coordinated_dropout_masks`).

    NOTE: the bound is checked at bin times only, so a state that exceeds it between bins and comes
    back is not caught; with n_substeps = 1 every solver step is a bin time.
    """

    @eqx.filter_jit
    def train_step(params, opt_state, y, stimulus, mask, key, beta, behaviour=None, lr_scale=1.0):
        # `behaviour` is None, an array of values, or the pair (values, mask) of `_behaviour_array`.
        if behaviour is None or not isinstance(behaviour, tuple):
            values, behaviour_mask = behaviour, None
        else:
            values, behaviour_mask = behaviour
        scored, reads = mask, None
        if coordinated_dropout > 0:
            heldin = getattr(static, "heldin_channels", None)
            reads, scored = coordinated_dropout_masks(key, mask, coordinated_dropout, heldin)

        def loss_fn(trainable):
            model = eqx.combine(trainable, static)
            loss, terms = model.loss(
                y, stimulus, scored, t0, bin_width, key, beta, n_samples, values, shooting,
                behaviour_mask=behaviour_mask, input_mask=reads,
            )
            if penalty is not None:
                loss = loss + penalty(model)
            return loss, terms

        (loss, terms), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(params)
        gradient_leaves = jax.tree_util.tree_leaves(grads)
        finite = jnp.isfinite(loss) & jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in gradient_leaves]))

        # A NaN peak compares False, so a non-finite path also counts as beyond the bound.
        beyond = ~(terms.pop("state_peak") <= max_state)
        first = jnp.argmax(beyond.reshape(-1))
        terms["state_bound_exceeded"] = jnp.any(beyond)
        terms["bound_trial"], terms["bound_bin"] = first // beyond.shape[1], first % beyond.shape[1]
        if "state_peak_bin" in terms:
            # A fused loss keeps one peak per trial, so the bin reported is that of the trial's largest |x|.
            terms["bound_bin"] = terms.pop("state_peak_bin").reshape(-1)[first]
        finite = finite & ~terms["state_bound_exceeded"]

        updates, new_opt_state = optimizer.update(grads, opt_state, params)
        updates = jax.tree_util.tree_map(lambda update: update * lr_scale, updates)
        new_params = eqx.apply_updates(params, updates)

        if skip_nonfinite:
            def keep_if_finite(new, old):
                return jnp.where(finite, new, old)

            new_params = jax.tree_util.tree_map(keep_if_finite, new_params, params)
            new_opt_state = jax.tree_util.tree_map(keep_if_finite, new_opt_state, opt_state)
        terms = {"loss": loss, **terms}
        return new_params, new_opt_state, terms, finite, optax.tree.norm(grads)

    return train_step


def select_devices(training: TrainingConfig) -> list:
    """Return the devices a fit runs on: the first `training.devices` of them, or all.

    The devices are those of this process, or with `training.distributed` those
    of every process. Raises ConfigError when more devices are requested than
    are present, or when `training.batch_size` trials cannot be split evenly
    over the devices.
    """
    distributed = training.distributed is not None
    available = jax.devices() if distributed else jax.local_devices()
    count = len(available) if training.devices is None else training.devices
    if count > len(available):
        where = f"devices in all {jax.process_count()} processes" if distributed else "local devices"
        raise ConfigError(
            f"training.devices is {count}, but only {len(available)} {where} are present. "
            f"Set it to at most {len(available)}, or leave it unset to use all of them."
        )
    if training.batch_size % count:
        lower = training.batch_size // count * count
        upper = lower + count
        nearest = f"{lower} or {upper}" if lower else f"{upper}"
        raise ConfigError(
            f"training.batch_size is {training.batch_size}, which does not divide evenly over the {count} devices "
            f"in use. Expected a multiple of {count}, such as {nearest}, or set training.devices to a divisor "
            f"of {training.batch_size}."
        )
    return available[:count]


@dataclass(frozen=True)
class DataParallel:
    """Shardings of a data-parallel fit over a 1-D mesh whose axis is named "trials"."""

    batch: NamedSharding
    replicated: NamedSharding

    @classmethod
    def over(cls, devices: list) -> DataParallel:
        mesh = Mesh(np.asarray(devices), ("trials",))
        return cls(NamedSharding(mesh, PartitionSpec("trials")), NamedSharding(mesh, PartitionSpec()))

    @staticmethod
    def put(tree, sharding: NamedSharding):
        """Place every array of `tree` with `sharding`, which may span the devices of other processes.

        Each process has the whole tree, so in a multi-host fit it builds its own
        shards from its copy. `jax.device_put` covers the one-process case.
        """
        if sharding.is_fully_addressable:
            return jax.device_put(tree, sharding)

        def place(leaf):
            host = np.asarray(leaf)
            return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

        return jax.tree_util.tree_map(place, tree)


@dataclass
class FitState:
    """Host-side state of a fit, stored in each checkpoint's header."""

    step: int = 0
    best_metric: float = -math.inf
    best_step: int = -1
    evaluations_without_improvement: int = 0
    nonfinite_in_a_row: int = 0
    nonfinite_total: int = 0
    solver_failures: int = 0
    lr_scale: float = 1.0
    stopped_early: bool = False
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)
    evaluations: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class FitResult:
    model: LatentUDE
    state: FitState
    split: dict[str, list[int]]


def _minibatch(seed: int, step: int, train_indices: np.ndarray, batch_size: int) -> np.ndarray:
    rng = np.random.default_rng([seed, step])
    replace = batch_size > len(train_indices)
    return np.sort(rng.choice(train_indices, size=batch_size, replace=replace))


def _history_csv(history: list[dict]) -> str:
    if not history:
        return ""
    # Rows restored from a checkpoint of an older version may lack newer columns; those cells stay empty.
    fieldnames = list(dict.fromkeys(name for row in history for name in row))
    stream = io.StringIO()
    writer = csv.DictWriter(stream, fieldnames=fieldnames, restval="")
    writer.writeheader()
    writer.writerows(history)
    return stream.getvalue()


def fit(
    model: LatentUDE,
    recording,
    config: RunConfig,
    split: dict[str, list[int]],
    run: RunFolder,
    resume: bool = False,
    quiet: bool = False,
) -> FitResult:
    """Fit `model` to the training trials of `recording`, writing checkpoints into `run`.

    Returns the best model by the validation metric (bits per spike for Poisson
    observations, R^2 for Gaussian ones) and the fit's state.
    """
    training = config.training
    dtype = precision_dtype(training.precision)
    model = cast_floating(model, dtype)
    initialize_distributed(training)
    devices = select_devices(training)
    spec = trainable_filter(model)
    params, static = eqx.partition(model, spec)
    optimizer = make_optimizer(training)
    opt_state = optimizer.init(params)
    state = FitState()

    if resume:
        header, (params, opt_state) = _load_model_checkpoint(run.last_checkpoint, (params, opt_state), model)
        state = FitState(**header)
        logger.info("resumed from %s at step %d", run.last_checkpoint, state.step)

    def checkpoint(path):
        save_checkpoint(path, state.to_dict(), (params, opt_state))
        write_text(run.history, _history_csv(state.history))

    # A Ctrl-C during the setup below (placing arrays, building the prior and train step) saves the current
    # parameters, the initial ones on a new fit, so a fit interrupted before its first step can be resumed.
    try:
        # One device keeps the default placement, so a single-device fit makes no sharding calls.
        # NOTE: a fit resumed on a different device count sums the loss in another order, so it is not bit-exact,
        # and the validation metric runs replicated on every device rather than sharded.
        data_parallel = DataParallel.over(devices) if len(devices) > 1 else None
        if data_parallel is not None:
            params, opt_state = data_parallel.put((params, opt_state), data_parallel.replicated)
            logger.info("data parallel over %d devices, %d trials per device per step",
                        len(devices), training.batch_size // len(devices))

        y, stimulus, mask = cast_floating(_data_arrays(recording), dtype)
        behaviour = cast_floating(_behaviour_array(model, recording), dtype)
        # A standardised head fits unit-scale values whatever the recording's units.
        if behaviour is not None and not getattr(model.behaviour, "standardised", False):
            train_trials = np.asarray(split["train"])
            warn_behaviour_scale(recording.behaviour[train_trials], recording.behaviour_observed[train_trials],
                                 recording.metadata.get("behaviour_names"))
        t0, bin_width = float(recording.ts[0]), float(recording.dt)
        train_indices = np.asarray(split["train"])
        validation = recording.select(split["validation"])
        if training.batch_size > len(train_indices):
            # The default batch size exceeds the packaged example's 12 training trials, and drawing with replacement
            # is intended there, so only a batch size the user chose gets a warning.
            chose = training.batch_size != type(training).model_fields["batch_size"].default
            logger.log(
                logging.WARNING if chose else logging.INFO,
                "training.batch_size is %d, larger than the %d training trials; each minibatch draws trials with "
                "replacement, so a trial can appear more than once in a step",
                training.batch_size, len(train_indices),
            )

        prior = constant_prior(model, config.model.constant_priors)
        penalty = prior_penalty(prior, len(train_indices))
        if model.constant_posterior is not None:
            # The KL of the constants' posterior contains the prior term, so it replaces the prior penalty.
            penalty = posterior_penalty(model, len(train_indices))
        shooting = multiple_shooting(config, y.shape[1])
        train_step = make_train_step(static, optimizer, t0, bin_width, training.n_samples,
                                     max_state=config.solver.max_state, penalty=penalty, shooting=shooting,
                                     coordinated_dropout=training.coordinated_dropout)
        schedule = learning_rate_schedule(training)
        base_key = jax.random.PRNGKey(config.seed)
        metric_name = "bits per spike" if config.model.observation == "poisson" else "R^2"

        def evaluate_now():
            model_now = eqx.combine(params, static)
            key = jax.random.fold_in(jax.random.fold_in(base_key, 1), state.step)
            metric = validation_metric(model_now, validation, config, key)
            state.evaluations.append({"step": state.step, "validation_metric": metric})
            last = state.history[-1]
            last["validation_metric"] = metric
            logger.info(
                "step %d: loss %.2f, log-likelihood %.2f, KL initial %.3f, KL path %.3f, beta %.2f, "
                "validation %s %.4f, skipped steps %d",
                state.step, last["loss"], last["log_likelihood"], last["kl_initial"], last["kl_path"], last["beta"],
                metric_name, metric, state.nonfinite_total,
            )
            if metric > state.best_metric:
                state.best_metric, state.best_step = metric, state.step
                state.evaluations_without_improvement = 0
                checkpoint(run.best_checkpoint)
            else:
                state.evaluations_without_improvement += 1
            return metric
    except KeyboardInterrupt:
        checkpoint(run.last_checkpoint)
        logger.warning("fit interrupted at step %d, before its next training step; continue it with --resume",
                       state.step)
        raise

    started = time.perf_counter() - state.seconds
    with FitProgress(training.steps, quiet=quiet, start=state.step) as progress, open_tensorboard(run) as board:
        try:
            while state.step < training.steps and not state.stopped_early:
                indices = _minibatch(config.seed, state.step, train_indices, training.batch_size)
                key = jax.random.fold_in(jax.random.fold_in(base_key, 0), state.step)
                beta = kl_weight(state.step, training)
                batch = (y[indices], stimulus[indices], mask[indices])
                batch_behaviour = None if behaviour is None else tuple(array[indices] for array in behaviour)
                if data_parallel is not None:
                    batch, batch_behaviour = data_parallel.put((batch, batch_behaviour), data_parallel.batch)
                failure = None
                try:
                    params, opt_state, terms, finite, grad_norm = train_step(
                        params, opt_state, *batch, key, jnp.float32(beta), batch_behaviour, jnp.float32(state.lr_scale)
                    )
                    finite = bool(finite)
                except SOLVER_ERRORS as error:
                    # The step raised before returning, so the parameters and optimiser state are the previous ones.
                    failure = solver_failure_message(error)
                    if failure is None:
                        raise
                    terms, finite, grad_norm = _failed_step_terms(), False, math.nan
                state.step += 1
                if failure is not None:
                    state.solver_failures += 1
                    logger.warning("step %d: the solver raised an error in the training step: %s",
                                   state.step, failure)
                elif bool(terms["state_bound_exceeded"]):
                    _log_state_bound(state.step, terms, indices, t0, bin_width, config.solver.max_state)
                must_stop = _count_nonfinite(state, finite, training)

                # The update of step s (counted from 0) used the learning rate schedule(s).
                row = {"step": state.step, **{name: float(terms[name]) for name in TERM_NAMES}}
                if "behaviour_log_likelihood" in terms:
                    row["behaviour_log_likelihood"] = float(terms["behaviour_log_likelihood"])
                if "continuity_penalty" in terms:
                    row["continuity_penalty"] = float(terms["continuity_penalty"])
                row.update(beta=beta, grad_norm=float(grad_norm), finite=finite, solver_failed=failure is not None,
                           learning_rate=float(schedule(state.step - 1)), skipped_steps=state.nonfinite_total,
                           validation_metric=None)
                state.history.append(row)

                if must_stop:
                    if failure is not None:
                        raise TrainingError(_solver_stop_message(state, config, failure, run))
                    model_now = eqx.combine(params, static)
                    # NOTE: with multiple shooting the diagnosis replays one continuous path, not the segments.
                    diagnosis = locate_nonfinite(model_now, *batch, t0, bin_width, key, training.n_samples,
                                                 config.solver.max_state, batch_behaviour)
                    raise TrainingError(_stop_message(state, config, diagnosis, indices, run))

                metric = None
                if state.step % training.eval_every == 0 or state.step == training.steps:
                    metric = evaluate_now()
                    if state.evaluations_without_improvement >= training.patience:
                        state.stopped_early = True
                        logger.info("stopping early at step %d: validation %s did not improve in %d evaluations",
                                    state.step, metric_name, training.patience)
                state.seconds = time.perf_counter() - started
                if state.step % training.checkpoint_every == 0 or state.step == training.steps or state.stopped_early:
                    checkpoint(run.last_checkpoint)
                progress.update(state.step, row, metric, state.best_metric, state.nonfinite_total)
                board.write(row)
        except KeyboardInterrupt:
            # Skipped steps never change the parameters, so the current ones are the last finite ones.
            state.seconds = time.perf_counter() - started
            checkpoint(run.last_checkpoint)
            logger.warning("fit interrupted at step %d; continue it with --resume", state.step)
            raise
        except Exception:
            _save_history_after_error(run, state)
            raise

    if state.best_step < 0:
        checkpoint(run.best_checkpoint)
    _, (best_params, _) = load_checkpoint(run.best_checkpoint, (params, opt_state))
    return FitResult(eqx.combine(best_params, static), state, split)


def _save_history_after_error(run: RunFolder, state: FitState) -> None:
    """Write the history rows of a fit that is stopping on an error, for the post-mortem.

    A resume still starts from the checkpoint's own history and overwrites this file at its next
    checkpoint. A failed write (a full disk, say) is logged, so the error that stopped the fit is the
    one raised.
    """
    try:
        write_text(run.history, _history_csv(state.history))
    except (OSError, RunFolderError) as error:
        logger.warning("could not write %s after the fit stopped: %s", run.history, error)


def multiple_shooting(config: RunConfig, n_bins: int) -> MultipleShooting | None:
    """Return the multiple-shooting settings of a fit on trials of `n_bins` bins, or None when it is off.

    Raises ConfigError when `solver.shooting_bins` does not divide `n_bins`.
    """
    if config.solver.shooting_bins is None:
        return None
    shooting = MultipleShooting(config.solver.shooting_bins, config.training.shooting_penalty)
    shooting.n_segments(n_bins)
    return shooting


def _data_arrays(recording):
    y = jnp.asarray(recording.y)
    stimulus = jnp.asarray(recording.u) if recording.u is not None else jnp.zeros(y.shape[:2] + (0,), y.dtype)
    mask = jnp.asarray(recording.mask, y.dtype) if recording.mask is not None else jnp.ones_like(y)
    return y, stimulus, mask


def _behaviour_array(model: LatentUDE, recording):
    """Return the recording's behaviour and its mask (1 where observed) as JAX arrays for a behaviour head, else None."""
    if getattr(model, "behaviour", None) is None:
        return None
    check_behaviour(recording, behaviour_configured=True)
    values = jnp.asarray(recording.behaviour)
    return values, jnp.asarray(recording.behaviour_observed, values.dtype)


def _log_state_bound(step: int, terms: dict, indices: np.ndarray, t0: float, bin_width: float, bound: float) -> None:
    trial = int(indices[int(terms["bound_trial"])])
    time_s = t0 + int(terms["bound_bin"]) * bin_width
    logger.warning("step %d: the latent state exceeded solver.max_state = %g (or became non-finite) in trial %d "
                   "at t = %.6g s; update skipped", step, bound, trial, time_s)


def _count_nonfinite(state: FitState, finite: bool, training: TrainingConfig) -> bool:
    """Count a skipped step, lower the learning rate, and return True once the fit must stop."""
    if finite:
        state.nonfinite_in_a_row = 0
        return False
    state.nonfinite_in_a_row += 1
    state.nonfinite_total += 1
    state.lr_scale *= training.nonfinite_lr_factor
    logger.warning("step %d: non-finite loss or gradient or a solver error, update skipped (%d in a row); "
                   "learning rate scaled to %.3g times the schedule", state.step, state.nonfinite_in_a_row,
                   state.lr_scale)
    return state.nonfinite_in_a_row >= training.max_nonfinite


def _failed_step_terms() -> dict[str, float]:
    """Return the history terms of a step whose solver raised: NaN, as no loss was computed."""
    return {name: math.nan for name in TERM_NAMES}


def _solver_stop_message(state: FitState, config: RunConfig, failure: str, run: RunFolder) -> str:
    training = config.training
    remedy = (
        "Tighten solver.rtol and solver.atol, lower training.learning_rate, or set training.precision to float64 "
        "if it is float32."
    )
    return (
        f"{state.nonfinite_in_a_row} training steps in a row were skipped (limit training.max_nonfinite = "
        f"{training.max_nonfinite}); the last one failed because the solver raised an error: {failure} "
        f"{_checkpoint_sentence(run)} {_reversible_heun_remedy(config) or remedy}"
    )


def _stop_message(state: FitState, config: RunConfig, diagnosis, indices: np.ndarray, run: RunFolder) -> str:
    training = config.training
    where = ""
    if diagnosis.trial is not None:
        where = f" in trial {int(indices[diagnosis.trial])}"
        if diagnosis.time is not None:
            where += f" at t = {diagnosis.time:.6g} s"
    remedy = "Lower training.learning_rate, raise solver.n_substeps, or check the data for extreme values."
    return (
        f"{state.nonfinite_in_a_row} training steps in a row had a non-finite loss or gradient "
        f"(limit training.max_nonfinite = {training.max_nonfinite}). {_checkpoint_sentence(run)} "
        f"Diagnosis of the last step: the first non-finite value came from the {diagnosis.module}{where}: "
        f"{diagnosis.detail}. {_reversible_heun_remedy(config) or remedy}"
    )


def _checkpoint_sentence(run: RunFolder) -> str:
    """Return what a stopped fit left to continue from: its last checkpoint, or nothing."""
    if run.last_checkpoint.is_file():
        return f"The last checkpoint, {run.last_checkpoint}, was kept as it was."
    overwrite = " with --overwrite" if run.best_checkpoint.is_file() else ""
    return f"No checkpoint was saved before the fit stopped, so start a new fit{overwrite} after the change below."


def _reversible_heun_remedy(config: RunConfig) -> str | None:
    """Return the advice for a failing fit with the reversible Heun solver, or None for other solvers."""
    if config.solver.method != "reversible_heun":
        return None
    return (
        "solver.method is reversible_heun, which is unstable on fast-decaying dynamics: its error grows about as "
        "exp(lambda t) for a decay rate lambda whatever the step size, so raising solver.n_substeps does not help. "
        "Use solver.method: heun (with solver.checkpoint_bins to bound the memory of the backward pass), or slower "
        "dynamics such as a larger model.drift_time_constant."
    )


def load_trained(run: RunFolder, model: LatentUDE, config: RunConfig, checkpoint_name: str = "best") -> tuple[LatentUDE, dict]:
    """Load the `best` or `last` parameters of a run into `model`, which was built from the run's config."""
    params, static = eqx.partition(model, trainable_filter(model))
    # The optimiser state's structure is needed to read the file; its values are not used.
    opt_state = make_optimizer(config.training).init(params)
    path = run.best_checkpoint if checkpoint_name == "best" else run.last_checkpoint
    header, (loaded, _) = _load_model_checkpoint(path, (params, opt_state), model)
    return eqx.combine(loaded, static), header


def _load_model_checkpoint(path, like, model: LatentUDE):
    """Read a checkpoint of `model`'s parameters, naming the recognition mask input when the shapes differ.

    Checkpoints written before the recognition model could read the mask have a GRU
    input of one column per channel, which a model with the mask input no longer matches.
    """
    try:
        return load_checkpoint(path, like)
    except DataFileError as error:
        if not getattr(model, "recognition_reads_mask", False):
            raise
        raise DataFileError(
            f"{error}. This model's recognition GRU reads the mask beside y (model.recognition_mask is true, or "
            "'auto' on a recording with masked entries), which doubles its input columns; to load a checkpoint "
            "written without that input, set model.recognition_mask: false in the run's config.yaml"
        ) from None
