"""Symbolic recovery: turn a learned vector field back into an equation by sparse regression.

Given samples `z_i` (the variables a term reads) and targets `g_i = g(z_i)`,
sequentially thresholded least squares (STLSQ, the regression of SINDy,
sparse identification of nonlinear dynamics) looks for a sparse coefficient
matrix `Xi` with

    g(z) ~ Theta(z) Xi

where the columns of `Theta` are candidate terms: monomials of the variables up
to a degree, named nonlinearities such as `tanh(v)`, and input terms. Each
iteration solves a ridge regression on the active terms, then drops every term
whose normalised coefficient is below the threshold. A coefficient is
normalised by the root mean square of its term's column and of its target, so
the threshold is the fraction of a target's size below which a term's
contribution counts as zero, whatever the units.

`sample_learned_term` evaluates a grey-box model's network (the term of a
`NeuralClosure` or the residual of a `ResidualDrift`) on the posterior paths of
a fitted `LatentUDE`, which are the states the data visited, and
`recover_learned_term` runs the regression on those samples.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..dynamics.hybrid import NeuralClosure, ResidualDrift
from ..errors import ConfigError, DataError

TermFunction = Callable[[np.ndarray], np.ndarray]

# Elementwise nonlinearities that `CandidateLibrary.with_functions` looks up by name.
NONLINEARITIES: dict[str, TermFunction] = {
    "tanh": np.tanh,
    "sigmoid": lambda z: 0.5 * (1.0 + np.tanh(0.5 * z)),
    "sin": np.sin,
    "cos": np.cos,
    "exp": np.exp,
}


@dataclass(frozen=True)
class CandidateLibrary:
    """Named candidate terms, each a function of the sample matrix `z` (samples, variables) -> (samples,)."""

    variable_names: tuple[str, ...]
    term_names: tuple[str, ...]
    term_functions: tuple[TermFunction, ...]

    def __post_init__(self):
        if len(self.term_names) != len(self.term_functions):
            raise ConfigError(
                f"the library has {len(self.term_names)} term names and {len(self.term_functions)} term functions; "
                "expected one function per name"
            )
        duplicates = sorted({name for name in self.term_names if self.term_names.count(name) > 1})
        if duplicates:
            raise ConfigError(f"library term names {duplicates} appear more than once; expected unique names")
        if len(set(self.variable_names)) != len(self.variable_names):
            raise ConfigError(f"variable names {list(self.variable_names)} are not unique")

    @classmethod
    def polynomial(
        cls,
        variable_names: Sequence[str],
        degree: int,
        input_names: Sequence[str] = (),
        input_degree: int = 1,
        constant: bool = True,
    ) -> CandidateLibrary:
        """Build every monomial of the variables and inputs with total degree from 0 (or 1) to `degree`.

        The variables come first in the samples, then the inputs. An input enters
        a monomial with a power of at most `input_degree`, so the default
        `input_degree=1` gives `u`, `v*u` but not `u^2`.
        """
        names = tuple(variable_names) + tuple(input_names)
        if not names:
            raise ConfigError("the polynomial library has no variables; expected at least one variable name")
        if not isinstance(degree, int) or degree < 1:
            raise ConfigError(f"degree is {degree!r}; expected a positive integer")
        if not isinstance(input_degree, int) or input_degree < 0:
            raise ConfigError(f"input_degree is {input_degree!r}; expected a non-negative integer")

        n_variables = len(variable_names)
        term_names, term_functions = [], []
        for total in range(0 if constant else 1, degree + 1):
            for combination in itertools.combinations_with_replacement(range(len(names)), total):
                powers = np.bincount(np.asarray(combination, dtype=int), minlength=len(names))
                if np.any(powers[n_variables:] > input_degree):
                    continue
                term_names.append(_monomial_name(names, powers))
                term_functions.append(_monomial(powers))
        return cls(names, tuple(term_names), tuple(term_functions))

    def with_functions(self, functions: Mapping[str, TermFunction | None], variables: Sequence[str] | None = None):
        """Return this library plus `name(variable)` for each function and variable.

        A function given as None is looked up by name in `NONLINEARITIES`, so
        `with_functions({"tanh": None}, ["v"])` adds the term `tanh(v)`.
        `variables` defaults to every variable of the library.
        """
        variables = list(self.variable_names if variables is None else variables)
        unknown = sorted(set(variables) - set(self.variable_names))
        if unknown:
            raise ConfigError(f"variables {unknown} are not in the library; expected some of {list(self.variable_names)}")

        term_names, term_functions = list(self.term_names), list(self.term_functions)
        for function_name, function in _function_items(functions):
            for variable in variables:
                index = self.variable_names.index(variable)
                term_names.append(f"{function_name}({variable})")
                term_functions.append(_applied(function, index))
        return CandidateLibrary(self.variable_names, tuple(term_names), tuple(term_functions))

    def evaluate(self, samples: np.ndarray) -> np.ndarray:
        """Return the library matrix `Theta` (samples, terms) of `samples` (samples, variables)."""
        samples = np.asarray(samples, dtype=np.float64)
        if samples.ndim != 2 or samples.shape[1] != len(self.variable_names):
            raise DataError(
                f"samples have shape {samples.shape}; expected (samples, {len(self.variable_names)}) "
                f"for the variables {list(self.variable_names)}"
            )
        columns = [np.broadcast_to(np.asarray(function(samples), np.float64), samples.shape[:1])
                   for function in self.term_functions]
        return np.stack(columns, axis=1)


def _function_items(functions: Mapping[str, TermFunction | None]) -> list[tuple[str, TermFunction]]:
    """Resolve a mapping of names to functions, filling each None from `NONLINEARITIES`."""
    items = []
    for name, function in functions.items():
        if function is None:
            if name not in NONLINEARITIES:
                raise ConfigError(f"nonlinearity {name!r} is not known; expected one of {sorted(NONLINEARITIES)} or a function")
            function = NONLINEARITIES[name]
        items.append((name, function))
    return items


def _monomial(powers: np.ndarray) -> TermFunction:
    def term(samples: np.ndarray) -> np.ndarray:
        return np.prod(samples ** powers, axis=1)

    return term


def _monomial_name(names: Sequence[str], powers: np.ndarray) -> str:
    factors = [name if power == 1 else f"{name}^{power}" for name, power in zip(names, powers) if power > 0]
    return "*".join(factors) if factors else "1"


def _applied(function: TermFunction, index: int) -> TermFunction:
    def term(samples: np.ndarray) -> np.ndarray:
        return function(samples[:, index])

    return term


@dataclass(frozen=True)
class SymbolicFit:
    """Result of a sparse regression: the coefficients of each target over the library's terms.

    `coefficients` is (terms, targets), zero for every dropped term. `r_squared`
    and `rmse` are per target, on the held-out samples.
    """

    term_names: tuple[str, ...]
    target_names: tuple[str, ...]
    coefficients: np.ndarray
    r_squared: np.ndarray
    rmse: np.ndarray
    n_train: int
    n_heldout: int

    def active_terms(self, target: int | str = 0) -> dict[str, float]:
        """Return the nonzero coefficients of one target, by term name."""
        column = self._target_index(target)
        return {name: float(value) for name, value in zip(self.term_names, self.coefficients[:, column]) if value != 0.0}

    def equation(self, target: int | str = 0, precision: int = 4) -> str:
        """Return one target's equation as text, such as `g = 0.08 v - 0.064 w + 0.056`."""
        column = self._target_index(target)
        parts = []
        for name, value in self.active_terms(column).items():
            magnitude = f"{abs(value):.{precision}g}"
            term = magnitude if name == "1" else f"{magnitude} {name}"
            sign = "-" if value < 0 else "+"
            parts.append((sign, term))
        if not parts:
            return f"{self.target_names[column]} = 0"
        first_sign, first_term = parts[0]
        text = ("-" if first_sign == "-" else "") + first_term
        for sign, term in parts[1:]:
            text += f" {sign} {term}"
        return f"{self.target_names[column]} = {text}"

    def __str__(self) -> str:
        lines = [
            f"{self.equation(column)}    (held-out R^2 {self.r_squared[column]:.4f}, RMSE {self.rmse[column]:.3g})"
            for column in range(len(self.target_names))
        ]
        return "\n".join(lines)

    def _target_index(self, target: int | str) -> int:
        if isinstance(target, str):
            if target not in self.target_names:
                raise ConfigError(f"target {target!r} is not fitted; expected one of {list(self.target_names)}")
            return self.target_names.index(target)
        if not 0 <= target < len(self.target_names):
            raise ConfigError(f"target index {target} is out of range; expected 0 to {len(self.target_names) - 1}")
        return target


def stlsq(
    theta: np.ndarray, targets: np.ndarray, threshold: float = 0.05, ridge: float = 1e-6, max_iterations: int = 20
) -> np.ndarray:
    """Sequentially thresholded ridge regression of `targets` (samples, k) on `theta` (samples, terms).

    Columns of `theta` are scaled to unit root mean square and each target too,
    so `threshold` and `ridge` are scale free. Each iteration solves, per target,

        min_c |b - A_S c|^2 + ridge * n * |c|^2

    on the active columns `S`, then removes every term whose scaled coefficient
    has magnitude below `threshold`, until the active set stops changing.
    Returns the coefficients (terms, k) in the original units.
    """
    column_scale = np.sqrt(np.mean(theta**2, axis=0))
    if np.any(column_scale == 0.0):
        zero = np.flatnonzero(column_scale == 0.0).tolist()
        raise DataError(f"library columns {zero} are zero on every sample; remove those terms or sample other states")
    target_scale = np.sqrt(np.mean(targets**2, axis=0))
    target_scale = np.where(target_scale > 0.0, target_scale, 1.0)
    scaled_theta = theta / column_scale
    scaled_targets = targets / target_scale

    n_samples, n_terms = theta.shape
    coefficients = np.zeros((n_terms, targets.shape[1]))
    for column in range(targets.shape[1]):
        active = np.ones(n_terms, dtype=bool)
        for _ in range(max_iterations):
            solution = _ridge(scaled_theta[:, active], scaled_targets[:, column], ridge * n_samples)
            keep = np.abs(solution) >= threshold
            if keep.all():
                break
            indices = np.flatnonzero(active)
            active[indices[~keep]] = False
            if not active.any():
                break
        if active.any():
            coefficients[active, column] = _ridge(scaled_theta[:, active], scaled_targets[:, column], ridge * n_samples)
    return coefficients * target_scale / column_scale[:, None]


def _ridge(matrix: np.ndarray, target: np.ndarray, penalty: float) -> np.ndarray:
    gram = matrix.T @ matrix + penalty * np.eye(matrix.shape[1])
    return np.linalg.solve(gram, matrix.T @ target)


def fit_symbolic(
    samples: np.ndarray,
    targets: np.ndarray,
    library: CandidateLibrary,
    target_names: Sequence[str] | None = None,
    threshold: float = 0.05,
    ridge: float = 1e-6,
    heldout_fraction: float = 0.2,
    seed: int = 0,
) -> SymbolicFit:
    """Fit `targets` (samples, k) as sparse combinations of the `library`'s terms of `samples` (samples, variables).

    A random `heldout_fraction` of the samples is left out of the regression and
    scores it: R^2 and RMSE per target. A 1-D `targets` is one target.
    Raises DataError for non-finite or mismatched samples and ConfigError for
    invalid settings, before any fitting.
    """
    samples, targets, target_names = _check_samples(samples, targets, library, target_names)
    _check_settings(threshold, ridge, heldout_fraction)

    order = np.random.default_rng(seed).permutation(samples.shape[0])
    n_heldout = int(round(heldout_fraction * samples.shape[0]))
    heldout, train = order[:n_heldout], order[n_heldout:]
    n_terms = len(library.term_names)
    if train.size < n_terms or heldout.size < 2:
        raise DataError(
            f"{samples.shape[0]} samples leave {train.size} for fitting and {heldout.size} held out; expected at "
            f"least {n_terms} (the number of library terms) for fitting and 2 held out"
        )

    theta = library.evaluate(samples)
    if not np.all(np.isfinite(theta)):
        bad = sorted({library.term_names[i] for i in np.flatnonzero(~np.all(np.isfinite(theta), axis=0))})
        raise DataError(f"library terms {bad} are NaN or infinite on some samples; remove them or rescale the samples")
    coefficients = stlsq(theta[train], targets[train], threshold, ridge)

    prediction = theta[heldout] @ coefficients
    error = targets[heldout] - prediction
    rmse = np.sqrt(np.mean(error**2, axis=0))
    variance = np.var(targets[heldout], axis=0)
    r_squared = 1.0 - np.mean(error**2, axis=0) / np.where(variance > 0.0, variance, np.inf)
    return SymbolicFit(library.term_names, tuple(target_names), coefficients, r_squared, rmse, train.size, heldout.size)


def _check_samples(samples, targets, library: CandidateLibrary, target_names):
    if not isinstance(library, CandidateLibrary):
        raise ConfigError(f"library is a {type(library).__name__}; expected a CandidateLibrary")
    if not library.term_names:
        raise ConfigError("the candidate library is empty; expected at least one term")
    samples = np.asarray(samples, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    if targets.ndim == 1:
        targets = targets[:, None]
    if samples.ndim != 2 or samples.shape[1] != len(library.variable_names):
        raise DataError(
            f"samples have shape {samples.shape}; expected (samples, {len(library.variable_names)}) "
            f"for the variables {list(library.variable_names)}"
        )
    if targets.ndim != 2 or targets.shape[0] != samples.shape[0]:
        raise DataError(
            f"targets have shape {targets.shape}; expected ({samples.shape[0]},) or ({samples.shape[0]}, targets) "
            "to match the samples"
        )
    for name, array in (("samples", samples), ("targets", targets)):
        if not np.all(np.isfinite(array)):
            count = int(np.sum(~np.isfinite(array)))
            raise DataError(f"{name} contain {count} NaN or infinite values; expected finite values")

    if target_names is None:
        target_names = ["g"] if targets.shape[1] == 1 else [f"g{i}" for i in range(targets.shape[1])]
    target_names = list(target_names)
    if len(target_names) != targets.shape[1]:
        raise ConfigError(f"target_names has {len(target_names)} names; expected {targets.shape[1]}, one per target")
    return samples, targets, target_names


def _check_settings(threshold: float, ridge: float, heldout_fraction: float) -> None:
    if not (np.isfinite(threshold) and threshold >= 0):
        raise ConfigError(f"threshold is {threshold!r}; expected a value >= 0")
    if not (np.isfinite(ridge) and ridge >= 0):
        raise ConfigError(f"ridge is {ridge!r}; expected a value >= 0")
    if not 0 < heldout_fraction < 1:
        raise ConfigError(f"heldout_fraction is {heldout_fraction!r}; expected a fraction between 0 and 1")


# -- learned terms of a fitted model ---------------------------------------------------------------


@dataclass(frozen=True)
class TermSamples:
    """A learned network evaluated on visited states: its inputs (samples, variables) and outputs (samples, k).

    The last `n_drive_inputs` variables are the encoded stimulus (a residual network reads it), the others states.
    """

    inputs: np.ndarray
    outputs: np.ndarray
    variable_names: tuple[str, ...]
    output_names: tuple[str, ...]
    n_drive_inputs: int = 0


def posterior_states(model, recording, key, n_samples: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Sample posterior paths of every trial of `recording`; return states (N, d) and encoded inputs (N, m).

    These are the states the data visited, as the fitted model infers them.
    """
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ConfigError(f"n_samples is {n_samples!r}; expected a positive integer")
    stimulus = recording.u if recording.u is not None else np.zeros(recording.y.shape[:2] + (0,), np.float32)
    keys = jax.random.split(key, recording.n_trials)
    paths, drive = _posterior_paths_and_drive(
        model, jnp.asarray(recording.y, jnp.float32), jnp.asarray(stimulus, jnp.float32),
        jnp.asarray(recording.observed), keys,
        float(recording.ts[0]), float(recording.dt), n_samples,
    )
    states = np.asarray(paths).reshape(-1, paths.shape[-1])
    inputs = np.asarray(drive).reshape(-1, drive.shape[-1])
    return states, inputs


@eqx.filter_jit
def _posterior_paths_and_drive(model, y, stimulus, mask, keys, t0: float, bin_width: float, n_samples: int):
    def one_trial(y_trial, stimulus_trial, mask_trial, trial_key):
        paths = model.posterior_paths(y_trial, stimulus_trial, t0, bin_width, trial_key, n_samples, mask=mask_trial)
        drive = jnp.broadcast_to(model.encode(stimulus_trial), paths.shape[:2] + (model.encoder.output_size,))
        return paths, drive

    return jax.vmap(one_trial)(y, stimulus, mask, keys)


def evaluate_learned_term(
    drift, states: np.ndarray, inputs: np.ndarray, state_names: Sequence[str] | None = None
) -> TermSamples:
    """Evaluate the network of a grey-box drift at `states` (N, d) with `inputs` (N, m).

    For a `NeuralClosure`, the inputs of the replaced term are captured from the
    mechanistic drift itself, so the samples contain exactly what the network reads
    (the state for the FitzHugh-Nagumo recovery term, `v` for its cubic term).
    The variables are named by the state names when the term reads the whole
    state, else `z0, z1, ...`. For a `ResidualDrift` the network reads the
    state and the input and returns one value per state.
    """
    states = np.asarray(states, np.float32)
    inputs = np.asarray(inputs, np.float32)
    if states.ndim != 2 or inputs.ndim != 2 or inputs.shape[0] != states.shape[0]:
        raise DataError(f"states have shape {states.shape} and inputs {inputs.shape}; expected (N, d) and (N, m)")
    if not (np.all(np.isfinite(states)) and np.all(np.isfinite(inputs))):
        raise DataError("states or inputs contain NaN or infinite values; expected finite values")
    state_size = states.shape[1]
    if state_names is None:
        state_names = [f"x{i}" for i in range(state_size)]
    state_names = tuple(state_names)
    if len(state_names) != state_size:
        raise ConfigError(f"state_names has {len(state_names)} names; expected {state_size}, one per state")

    if isinstance(drift, NeuralClosure):
        return _closure_samples(drift, states, inputs, state_names)
    if isinstance(drift, ResidualDrift):
        outputs = np.asarray(jax.jit(jax.vmap(lambda x, u: drift.residual_term(0.0, x, u)))(states, inputs))
        input_names = tuple(f"u{i}" for i in range(inputs.shape[1]))
        samples = np.concatenate([states, inputs], axis=1).astype(np.float64)
        names = tuple(f"residual d{name}/dt" for name in state_names)
        return TermSamples(samples, outputs.astype(np.float64), state_names + input_names, names, len(input_names))
    raise ConfigError(
        f"the drift is a {type(drift).__name__}; expected a grey-box drift (NeuralClosure or ResidualDrift)"
    )


def _closure_samples(drift: NeuralClosure, states, inputs, state_names) -> TermSamples:
    def captured(x, u):
        calls = []

        def recorder(z):
            value = drift._term_value(z)
            calls.append((z, value))
            return value

        drift.mechanistic.drift_with(0.0, x, u, {drift.term: recorder})
        return [jnp.atleast_1d(z) for z, _ in calls], [jnp.atleast_1d(value) for _, value in calls]

    try:
        term_inputs, term_outputs = jax.jit(jax.vmap(captured))(states, inputs)
    except jax.errors.UnexpectedTracerError:
        # NOTE: a drift that maps the closure inside its own jax.vmap (Kuramoto's pairwise coupling) hides the
        # term's inputs from this capture.
        raise ConfigError(
            f"the inputs of the {drift.term!r} closure of the {type(drift.mechanistic).__name__} drift cannot be "
            "captured, because the drift maps the closure inside its own vmap; compute the term's inputs from the "
            "states, evaluate them with drift.closure_term and pass both to fit_symbolic"
        ) from None
    if not term_inputs:
        raise ConfigError(f"the {drift.term!r} closure was never called by the mechanistic drift; nothing to sample")
    # A term called several times per state (one call per node or pair) gives one sample per call.
    samples = np.concatenate([np.asarray(z).reshape(-1, z.shape[-1]) for z in term_inputs]).astype(np.float64)
    outputs = np.concatenate([np.asarray(g).reshape(samples.shape[0] // len(term_inputs), -1)
                              for g in term_outputs]).astype(np.float64)

    if samples.shape[1] == states.shape[1] and len(term_inputs) == 1 and np.allclose(samples, states):
        variable_names = state_names
    else:
        variable_names = tuple(f"z{i}" for i in range(samples.shape[1])) if samples.shape[1] > 1 else ("z",)
    output_names = (drift.term,) if outputs.shape[1] == 1 else tuple(f"{drift.term}[{i}]" for i in range(outputs.shape[1]))
    return TermSamples(samples, outputs, variable_names, output_names)


def sample_learned_term(model, recording, key, n_samples: int = 4, state_names: Sequence[str] | None = None) -> TermSamples:
    """Evaluate a fitted grey-box model's network on the posterior paths of `recording`'s trials."""
    states, inputs = posterior_states(model, recording, key, n_samples)
    return evaluate_learned_term(model.sde.drift, states, inputs, state_names)


def recover_learned_term(
    model,
    recording,
    key,
    degree: int = 2,
    library: CandidateLibrary | None = None,
    state_names: Sequence[str] | None = None,
    n_samples: int = 4,
    threshold: float = 0.05,
    ridge: float = 1e-6,
    heldout_fraction: float = 0.2,
) -> SymbolicFit:
    """Sample a grey-box model's learned network on the states the data visited and fit a sparse equation to it.

    Without a `library`, the candidates are the monomials up to `degree` of the
    variables the network reads, with the stimulus entering each monomial at most linearly.

    The equation is in the fitted model's latent coordinates. A learned readout fixes those
    only up to the symmetries of the model family (FitzHugh-Nagumo with a free input gain
    can land in the mirror image (v, w) -> (-v, 2 i_ext - w)), so compare it with a known
    equation only after fixing that choice, as `examples/symbolic_recovery.py` does.
    """
    samples = sample_learned_term(model, recording, key, n_samples, state_names)
    if library is None:
        split = len(samples.variable_names) - samples.n_drive_inputs
        library = CandidateLibrary.polynomial(samples.variable_names[:split], degree, samples.variable_names[split:])
    return fit_symbolic(samples.inputs, samples.outputs, library, samples.output_names, threshold, ridge,
                        heldout_fraction)
