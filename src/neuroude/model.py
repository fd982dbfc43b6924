"""LatentUDE: stimulus encoder, recognition model, process model and observation model in one module.

Generative model for one trial with drive `u = encoder(stimulus)`:

    x0 ~ N(0, I), or N(location, diag(scale^2)) for a drift that declares them (see GRURecognition)
    dx = f(t, x, u) dt + sigma(t, x, u) dW          (prior process model)
    y_k ~ p(y_k | x(t_k))                           (observation model)

Approximate posterior: `x0 ~ q(x0 | y)` from the recognition model, and the
posterior SDE `dx = (f + h(x, u, c)) dt + sigma dW`, where `h` is a network of
the state, the drive and the recognition context `c(t)`. Prior and posterior
share `sigma`, so by Girsanov's theorem the path KL is
`E_q[int 0.5 |h / sigma|^2 dt]`, integrated as an extra solver state. With no
diffusion the process is an ODE, `h` is not used and only the initial-state KL
remains.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .dynamics.hybrid import ResidualDrift
from .dynamics.mechanistic.network import BrainNetwork
from .dynamics.sde import SDE
from .errors import ConfigError
from .fused import can_fuse, fused_elbo_terms
from .recognition import initial_state_kl
from .segments import checkpointed_sum
from .shooting import MultipleShooting, shooting_paths
from .reversible import solve_reversible_heun
from .solve import FIXED_STEP_METHODS, REVERSIBLE_METHODS, check_method, solve_adaptive, solve_fixed_step
from .stimulus import INTERPOLATIONS, input_at
from .streaming import can_stream, streamed_elbo_terms


class LatentUDE(eqx.Module):
    """A latent universal differential equation fitted by variational inference."""

    encoder: eqx.Module
    recognition: eqx.Module
    sde: SDE
    correction: eqx.nn.MLP | None
    observation: eqx.Module
    behaviour: eqx.Module | None
    constant_posterior: eqx.Module | None
    latent_size: int = eqx.field(static=True)
    behaviour_weight: float = eqx.field(static=True)
    method: str = eqx.field(static=True)
    n_substeps: int = eqx.field(static=True)
    interpolation: str = eqx.field(static=True)
    adjoint: str = eqx.field(static=True)
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    observed_states: tuple[int, ...] | None = eqx.field(static=True)
    checkpoint_bins: int = eqx.field(static=True)
    heldin_channels: tuple[int, ...] | None = eqx.field(static=True)
    recognition_reads_mask: bool = eqx.field(static=True)

    def __init__(
        self,
        encoder: eqx.Module,
        recognition: eqx.Module,
        sde: SDE,
        observation: eqx.Module,
        latent_size: int,
        context_size: int,
        correction_width: int = 64,
        method: str = "euler",
        n_substeps: int = 1,
        interpolation: str = "hold",
        adjoint: str = "checkpoint",
        rtol: float = 1e-4,
        atol: float = 1e-6,
        observed_states: tuple[int, ...] | None = None,
        heldin_channels: tuple[int, ...] | None = None,
        *,
        key: PRNGKeyArray,
        checkpoint_bins: int = 0,
        behaviour: eqx.Module | None = None,
        behaviour_weight: float = 1.0,
        constant_posterior: eqx.Module | None = None,
        recognition_reads_mask: bool = False,
    ):
        check_method(method, sde.is_ode, adjoint)
        _check_delays(sde.drift, method)
        if interpolation not in INTERPOLATIONS:
            raise ConfigError(f"interpolation is {interpolation!r}; expected one of {INTERPOLATIONS}")
        if n_substeps < 1:
            raise ConfigError(f"n_substeps is {n_substeps}; expected an integer >= 1")
        if checkpoint_bins < 0:
            raise ConfigError(f"checkpoint_bins is {checkpoint_bins}; expected 0 (off) or a number of bins >= 1")
        if recognition.latent_size != latent_size:
            raise ConfigError(
                f"the recognition model infers {recognition.latent_size} latent states; expected latent_size {latent_size}"
            )

        self.encoder = encoder
        self.recognition = recognition
        self.sde = sde
        self.observation = observation
        self.behaviour = behaviour
        # A `ConstantPosterior` makes each trial's loss use its own draw of the mechanistic constants.
        self.constant_posterior = constant_posterior
        self.behaviour_weight = float(behaviour_weight)
        self.latent_size = latent_size
        self.method = method
        self.n_substeps = n_substeps
        self.interpolation = interpolation
        self.adjoint = adjoint
        self.rtol = rtol
        self.atol = atol
        self.observed_states = _check_observed_states(observed_states, latent_size)
        self.checkpoint_bins = checkpoint_bins
        # Co-smoothing: the recognition model reads only these channels; the observation model predicts all.
        self.heldin_channels = None if heldin_channels is None else tuple(int(index) for index in heldin_channels)
        self.recognition_reads_mask = bool(recognition_reads_mask)

        if sde.is_ode:
            self.correction = None
        else:
            # The correction starts at zero: the initial posterior drift equals the prior's and the path KL is 0.
            mlp = eqx.nn.MLP(
                latent_size + encoder.output_size + context_size, latent_size, correction_width, 1,
                activation=jax.nn.softplus, key=key,
            )
            last = mlp.layers[-1]
            self.correction = eqx.tree_at(
                lambda m: (m.layers[-1].weight, m.layers[-1].bias), mlp, (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias))
            )

    # -- description ---------------------------------------------------------

    def summary(self) -> str:
        """Describe the model: its modules with parameter counts, sizes, drift type, solver and constants."""
        from .summary import describe_model

        return describe_model(self)

    def __repr__(self) -> str:
        # The default equinox repr prints every array; this one line names the parts instead.
        from .summary import count_parameters

        diffusion = "none" if self.sde.diffusion is None else type(self.sde.diffusion).__name__
        return (
            f"LatentUDE(latent_size={self.latent_size}, drift={type(self.sde.drift).__name__}, "
            f"diffusion={diffusion}, observation={type(self.observation).__name__}, "
            f"parameters={count_parameters(self)[0]})"
        )

    # -- vector fields -------------------------------------------------------

    def _fields(self, drive: Float[Array, "T m"], context: Float[Array, "T c"] | None) -> "VectorFields":
        """Return the solver's vector fields: the posterior SDE when a context is given, else the prior."""
        return VectorFields(self, drive, context)

    def _integrate(
        self, fields, x0, t0: float, bin_width: float, n_bins: int, key: PRNGKeyArray | None, first_bin=0
    ):
        if self.method in FIXED_STEP_METHODS:
            noise_key = None if self.sde.is_ode else key
            return solve_fixed_step(
                fields, x0, t0, bin_width, n_bins, self.n_substeps, noise_key, self.method, self.checkpoint_bins,
                history=self._delay_line(bin_width / self.n_substeps), first_bin=first_bin,
            )
        if self.method in REVERSIBLE_METHODS:
            noise_key = None if self.sde.is_ode else key
            return solve_reversible_heun(fields, x0, t0, bin_width, n_bins, self.n_substeps, noise_key, first_bin)
        return solve_adaptive(fields, x0, t0, bin_width, n_bins, self.method, self.adjoint, self.rtol, self.atol)

    def _delay_line(self, step: float):
        """Return the drift's history buffer for solver steps of `step` seconds, or None without delays."""
        drift = self.sde.drift
        return drift.delay_line(step) if isinstance(drift, BrainNetwork) else None

    def _sample_paths(self, fields, mean0, std0, t0: float, bin_width: float, n_bins: int, key, n_samples: int):
        """Draw `x0 ~ N(mean0, std0^2)` and integrate `fields` from it, `n_samples` times; return paths and path KLs."""

        def one_path(sample_key):
            k_x0, k_noise = jax.random.split(sample_key)
            x0 = mean0 + std0 * jax.random.normal(k_x0, mean0.shape, mean0.dtype)
            return self._integrate(fields, x0, t0, bin_width, n_bins, k_noise)

        return jax.vmap(one_path)(jax.random.split(key, n_samples))

    def observed(self, path: Float[Array, "T d"]) -> Float[Array, "T o"]:
        """Return the states of `path` that the observation model reads."""
        if self.observed_states is None:
            return path
        return path[:, jnp.asarray(self.observed_states)]

    def recognition_input(self, y: Float[Array, "T n"], mask: Float[Array, "T n"] | None = None) -> Float[Array, "T r"]:
        """Return what the recognition model reads of `y`: the held-in channels under co-smoothing.

        With `recognition_reads_mask`, the input is `concat(y * mask, mask)` per bin, so a
        missing sample (mask 0) differs from an observed zero and the values behind a 0 in
        the mask do not matter. A `mask` of None counts every entry as observed. Without
        `recognition_reads_mask`, `mask` is ignored and `y` is read as it is.
        """
        if self.heldin_channels is not None:
            heldin = jnp.asarray(self.heldin_channels)
            y = y[:, heldin]
            mask = None if mask is None else mask[:, heldin]
        if not self.recognition_reads_mask:
            return y
        mask = jnp.ones_like(y) if mask is None else jnp.asarray(mask, y.dtype)
        return jnp.concatenate([y * mask, mask], axis=-1)

    # -- inference -----------------------------------------------------------

    def encode(self, stimulus: Float[Array, "T k"]) -> Float[Array, "T m"]:
        return self.encoder(stimulus)

    def trial_elbo_terms(
        self,
        y: Float[Array, "T n"],
        stimulus: Float[Array, "T k"],
        mask: Float[Array, "T n"],
        t0: float,
        bin_width: float,
        key: PRNGKeyArray,
        n_samples: int = 1,
        behaviour: Float[Array, "T b"] | None = None,
        shooting: MultipleShooting | None = None,
        behaviour_mask: Float[Array, "T b"] | None = None,
        input_mask: Float[Array, "T n"] | None = None,
    ) -> dict[str, Float[Array, ""]]:
        """Return the ELBO terms of one trial, averaged over `n_samples` posterior paths.

        `mask` selects the entries of `y` whose likelihood is scored, and `input_mask` (`mask`
        when None) those the recognition model reads. They differ under coordinated dropout.

        Keys: `log_likelihood`, `kl_initial`, `kl_path`, `residual_penalty`,
        `behaviour_log_likelihood` when the model has a behaviour head,
        `continuity_penalty` with `shooting` (see `neuroude.shooting`), and `state_peak`, the
        largest |x| over samples and latent states at each bin time (shape (T,)), which the fitting
        loop compares with its bound on the latent state.

        With `checkpoint_bins > 0` the terms are computed segment by segment where the model
        allows it (`neuroude.streaming`), so the backward pass stores no array as long as the trial.
        With reversible Heun and a recognition model local in time (or an ODE), they are computed
        inside one reversible integration that stores nothing per bin (`neuroude.fused`).
        """
        if input_mask is None:
            input_mask = mask
        if shooting is None and can_fuse(self):
            if self.behaviour is not None and behaviour is None:
                raise ConfigError("the model has a behaviour head, but no behaviour array was passed to the loss")
            return fused_elbo_terms(
                self, y, stimulus, mask, t0, bin_width, key, n_samples, behaviour, behaviour_mask, input_mask
            )
        if shooting is None and can_stream(self):
            return streamed_elbo_terms(
                self, y, stimulus, mask, t0, bin_width, key, n_samples, behaviour, behaviour_mask, input_mask
            )

        drive = self.encode(stimulus)
        readable = self.recognition_input(y, input_mask)
        mean0, std0 = self.recognition.initial_state(readable, drive)
        kl_initial = initial_state_kl(self.recognition, mean0, std0)
        context = None if self.sde.is_ode else self.recognition.context(readable, drive, self.checkpoint_bins)
        fields = self._fields(drive, context)

        if shooting is None:
            paths, kl_path = self._sample_paths(fields, mean0, std0, t0, bin_width, y.shape[0], key, n_samples)
        else:
            paths, kl_path, continuity = shooting_paths(
                self, shooting, readable, drive, context, mean0, std0, t0, bin_width, key, n_samples
            )
        log_likelihood = jax.vmap(lambda path: self._log_likelihood(y, path, mask))(paths)
        penalty = jax.vmap(lambda path: self._residual_penalty(path, drive))(paths)
        terms = {
            "log_likelihood": jnp.mean(log_likelihood),
            "kl_initial": kl_initial,
            "kl_path": jnp.mean(kl_path),
            "residual_penalty": jnp.mean(penalty),
            "state_peak": jnp.max(jnp.abs(paths), axis=(0, 2)),
        }
        if shooting is not None:
            terms["continuity_penalty"] = jnp.mean(continuity)
        if self.behaviour is not None:
            terms["behaviour_log_likelihood"] = self._behaviour_log_likelihood(paths, behaviour, behaviour_mask)
        return terms

    def _behaviour_log_likelihood(self, paths: Float[Array, "S T d"], behaviour, behaviour_mask) -> Float[Array, ""]:
        if behaviour is None:
            raise ConfigError("the model has a behaviour head, but no behaviour array was passed to the loss")
        observed = jnp.ones_like(behaviour) if behaviour_mask is None else behaviour_mask
        return jnp.mean(jax.vmap(lambda path: self.behaviour.log_prob(behaviour, path, observed))(paths))

    def _log_likelihood(self, y: Float[Array, "T n"], path: Float[Array, "T d"], mask: Float[Array, "T n"]):
        # Likelihoods that are sums over bins can be computed in recomputed segments, like the solver.
        if self.checkpoint_bins and getattr(self.observation, "time_separable", False):
            return checkpointed_sum(
                lambda y, x, m: self.observation.log_prob(y, x, m), (y, self.observed(path), mask), self.checkpoint_bins
            )
        return self.observation.log_prob(y, self.observed(path), mask)

    def _residual_penalty(self, path: Float[Array, "T d"], drive: Float[Array, "T m"]) -> Float[Array, ""]:
        drift = self.sde.drift
        if not isinstance(drift, ResidualDrift) or drift.residual_penalty == 0.0:
            return jnp.zeros((), path.dtype)
        residuals = jax.vmap(lambda x, u: drift.residual_term(0.0, x, u))(path, drive)
        return drift.residual_penalty * jnp.mean(jnp.sum(residuals**2, axis=-1))

    def loss(
        self,
        y: Float[Array, "B T n"],
        stimulus: Float[Array, "B T k"],
        mask: Float[Array, "B T n"],
        t0: float,
        bin_width: float,
        key: PRNGKeyArray,
        beta: Float[Array, ""] | float = 1.0,
        n_samples: int = 1,
        behaviour: Float[Array, "B T b"] | None = None,
        shooting: MultipleShooting | None = None,
        behaviour_mask: Float[Array, "B T b"] | None = None,
        input_mask: Float[Array, "B T n"] | None = None,
    ) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
        """Return the negative ELBO per trial averaged over the batch, and its terms.

        `-E_q[log p(y | x)] + beta * (KL(q(x0 | y) || p(x0)) + KL_path) + residual penalty`, with the
        prior `p(x0)` of the recognition model (`N(0, I)` unless the drift declares another).
        With a behaviour head, `- w E_q[log p(behaviour | x)]` is added, with `w = behaviour_weight`,
        summed over the entries where `behaviour_mask` is 1 (all of them when it is None).
        With a constant posterior, each trial's terms use one draw of the constants from it
        (the KL of the constants is added by the fitting loop; see `constant_posterior`).
        With `shooting`, the paths are integrated in segments and their continuity penalty is added
        (a training objective only; see `neuroude.shooting`). `input_mask`, when given, is the
        mask the recognition model reads in place of `mask` (see `trial_elbo_terms`).

        The terms are batch means, except `state_peak`, which stays (B, T), or (B, 1) with the
        bin of each trial's peak in `state_peak_bin` when the loss is fused (`neuroude.fused`).
        """
        if self.behaviour is not None and behaviour is None:
            raise ConfigError("the model has a behaviour head, but no behaviour array was passed to the loss")
        if behaviour is None:
            behaviour = jnp.zeros(y.shape[:2] + (0,), y.dtype)
        if behaviour_mask is None:
            behaviour_mask = jnp.ones_like(behaviour)
        if input_mask is None:
            input_mask = mask
        keys = jax.random.split(key, y.shape[0])

        def one_trial(yi, si, mi, ki, bi, bmi, ii):
            model = self
            if self.constant_posterior is not None:
                ki, constants_key = jax.random.split(ki)
                model = self.constant_posterior.draw(self, constants_key)
            has_head = self.behaviour is not None
            return model.trial_elbo_terms(
                yi, si, mi, t0, bin_width, ki, n_samples, bi if has_head else None, shooting, bmi if has_head else None,
                ii,
            )

        terms = jax.vmap(one_trial)(y, stimulus, mask, keys, behaviour, behaviour_mask, input_mask)
        peaks = {name: terms.pop(name) for name in ("state_peak", "state_peak_bin") if name in terms}
        terms = {name: jnp.mean(value) for name, value in terms.items()}
        kl = terms["kl_initial"] + terms["kl_path"]
        loss = -terms["log_likelihood"] + beta * kl + terms["residual_penalty"]
        if shooting is not None:
            loss = loss + terms["continuity_penalty"]
        if self.behaviour is not None:
            loss = loss - self.behaviour_weight * terms["behaviour_log_likelihood"]
        return loss, {**terms, **peaks}

    # -- prediction ----------------------------------------------------------

    def predict_trial(
        self,
        y: Float[Array, "T n"],
        stimulus: Float[Array, "T k"],
        t0: float,
        bin_width: float,
        key: PRNGKeyArray,
        n_samples: int = 16,
        mask: Float[Array, "T n"] | None = None,
    ) -> tuple[Float[Array, "S T n"], Float[Array, "S T d"]]:
        """Sample the prior SDE from the inferred `x0`; return expected observations and latent paths per sample.

        Only the first `recognition.n_init_bins` bins of `y` (and of `mask`, when the
        recognition model reads it) are read, to infer `x0`. The rest of the trial is
        predicted from the stimulus alone.
        """
        drive = self.encode(stimulus)
        mean0, std0 = self.recognition.initial_state(self.recognition_input(y, mask), drive)
        fields = self._fields(drive, None)
        paths, _ = self._sample_paths(fields, mean0, std0, t0, bin_width, y.shape[0], key, n_samples)
        return jax.vmap(lambda path: self.observation.mean(self.observed(path)))(paths), paths

    def posterior_paths(
        self,
        y: Float[Array, "T n"],
        stimulus: Float[Array, "T k"],
        t0: float,
        bin_width: float,
        key: PRNGKeyArray,
        n_samples: int = 16,
        mask: Float[Array, "T n"] | None = None,
    ) -> Float[Array, "S T d"]:
        """Sample latent paths from the posterior SDE given the whole trial (`mask`: see `recognition_input`)."""
        drive = self.encode(stimulus)
        readable = self.recognition_input(y, mask)
        mean0, std0 = self.recognition.initial_state(readable, drive)
        context = None if self.sde.is_ode else self.recognition.context(readable, drive)
        fields = self._fields(drive, context)
        paths, _ = self._sample_paths(fields, mean0, std0, t0, bin_width, y.shape[0], key, n_samples)
        return paths


def _check_delays(drift, method: str) -> None:
    """Raise ConfigError when a drift with conduction delays cannot be integrated as configured."""
    wrapped = getattr(drift, "mechanistic", None)
    if isinstance(wrapped, BrainNetwork) and wrapped.delays is not None:
        raise ConfigError(
            f"the network inside the {type(drift).__name__} drift has conduction delays, which only a plain "
            "'network' drift supports; remove model.residual or model.network.fibre_lengths"
        )
    if isinstance(drift, BrainNetwork) and drift.delays is not None and method not in FIXED_STEP_METHODS:
        raise ConfigError(
            f"solver method {method!r} cannot integrate conduction delays, because only {FIXED_STEP_METHODS} "
            f"carry a history of past states; use one of them or remove model.network.fibre_lengths"
        )


def _check_observed_states(observed_states, latent_size: int) -> tuple[int, ...] | None:
    if observed_states is None:
        return None
    states = tuple(int(index) for index in observed_states)
    if not states:
        raise ConfigError("observed_states is empty; expected at least one latent state index")
    out_of_range = [index for index in states if not 0 <= index < latent_size]
    if out_of_range:
        raise ConfigError(
            f"observed_states {out_of_range} are out of range; expected indices from 0 to {latent_size - 1}"
        )
    return states


class VectorFields(eqx.Module):
    """Drift, diffusion and path-KL rate of one trial, as a PyTree so adjoints can differentiate through it."""

    model: LatentUDE
    drive: Float[Array, "T m"]
    context: Float[Array, "T c"] | None

    def __call__(self, t, x, k, frac, past=None):
        # `past` contains the delayed states of a network with conduction delays (see `BrainNetwork.delayed`).
        model = self.model
        u = input_at(self.drive, k, frac, model.interpolation)
        drift = model.sde.drift(t, x, u) if past is None else model.sde.drift.delayed(t, x, u, past)
        if model.sde.is_ode:
            return drift, jnp.zeros_like(x), jnp.zeros((), x.dtype)

        sigma = model.sde.diffusion(t, x, u)
        if self.context is None:
            return drift, sigma, jnp.zeros((), x.dtype)

        correction = model.correction(jnp.concatenate([x, u, self.context[k]]))
        kl_rate = 0.5 * jnp.sum((correction / sigma) ** 2)
        return drift + correction, sigma, kl_rate
