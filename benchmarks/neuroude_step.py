"""Time one neuroude training step on the peer workload, in its own process.

Run by `bench_training_step.py`, which reads the one JSON line this script
prints. The model is built through the public config path (`parse_config`,
`build_model`, `make_optimizer`, `make_train_step`), so the step is the one a
user's fit runs. Workload: 64 trials, 100 bins of 0.01 s, 50 Poisson neurons,
8 latents, GRU recognition (hidden 64) with a 16-dim context, no stimulus.

`--variant` applies one monkeypatch before the model is built, to measure what
a part of the step costs. The patches live only in this process. `baseline`
patches nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

import neuroude.train as train_module
from neuroude.build import build_model
from neuroude.config import parse_config
from neuroude.dynamics import NetworkDiffusion, trainable_filter
from neuroude.observation import PoissonObservation

N_TRIALS, N_BINS, N_NEURONS = 64, 100, 50
BIN_WIDTH = 0.01

MODEL_CONFIG = {
    "latent_size": 8,
    "drift_width": 64,
    "drift_depth": 1,
    "diffusion": "network",
    "recognition_hidden": 64,
    "context_size": 16,
    "correction_width": 64,
    "encoder": "identity",
    "link": "exp",
    "interpolation": "hold",
}


# -- variants -----------------------------------------------------------------


def _patch_diffusion_without_einsum() -> None:
    """Evaluate NetworkDiffusion's first layer as a broadcast product instead of an einsum (no input)."""
    original = NetworkDiffusion.__call__

    def call(self, t, x, u):
        if self.uses_input:
            return original(self, t, x, u)
        hidden = jax.nn.softplus(self.weight_in[:, :, 0] * x[:, None] + self.bias_in)
        logits = jnp.sum(self.weight_out * hidden, axis=1) + self.bias_out
        return self.max_scale * jax.nn.sigmoid(logits) + self.floor

    NetworkDiffusion.__call__ = call


def _patch_step_without_guard() -> None:
    """Build the training step without the jnp.where guard on parameters and optimiser state."""
    guarded = train_module.make_train_step

    def make_train_step(static, optimizer, t0, bin_width, n_samples):
        return guarded(static, optimizer, t0, bin_width, n_samples, skip_nonfinite=False)

    train_module.make_train_step = make_train_step


def _patch_poisson_without_gammaln() -> None:
    """Drop the constant log(y!) term from the Poisson log-likelihood, as the peers do."""

    def log_prob(self, y, x, mask):
        log_rate = self.log_rate(x)
        return jnp.sum((y * log_rate - jnp.exp(log_rate)) * mask)

    PoissonObservation.log_prob = log_prob


def _plain_adam(config):
    """Adam at a fixed rate with no clipping or weight decay, the peers' optimiser."""
    return optax.adam(config.learning_rate)


VARIANTS = {
    "baseline": "nothing patched",
    "no_einsum": "NetworkDiffusion first layer as a broadcast product",
    "no_guard": "no jnp.where guard on the parameter and optimiser-state update",
    "no_gammaln": "Poisson log-likelihood without the constant log(y!)",
    "adam": "optax.adam instead of clip_by_global_norm + adamw with a schedule",
    "init_bins_1": "n_init_bins 1: the separate initial-state GRU pass reads 1 bin instead of 10",
    "strong_dtypes": "parameters cast to non-weak float32 before the first step",
    "all": "every patch above at once",
}


def _apply_variant(variant: str, model_config: dict) -> tuple[dict, object]:
    """Apply the monkeypatches of `variant`; return the model config and the optimiser factory to use."""
    patches = {variant} if variant != "all" else set(VARIANTS) - {"baseline", "all"}
    make_optimizer = train_module.make_optimizer
    if "no_einsum" in patches:
        _patch_diffusion_without_einsum()
    if "no_guard" in patches:
        _patch_step_without_guard()
    if "no_gammaln" in patches:
        _patch_poisson_without_gammaln()
    if "adam" in patches:
        make_optimizer = _plain_adam
    if "init_bins_1" in patches:
        model_config = {**model_config, "n_init_bins": 1}
    return model_config, make_optimizer


# -- measurement --------------------------------------------------------------


def _count_equations(jaxpr) -> int:
    """Count the equations of a jaxpr, including those of the sub-jaxprs of scan, cond, pjit and custom rules."""
    total = 0
    for equation in jaxpr.eqns:
        total += 1
        for value in equation.params.values():
            for item in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(item, jax.extend.core.ClosedJaxpr):
                    total += _count_equations(item.jaxpr)
                elif isinstance(item, jax.extend.core.Jaxpr):
                    total += _count_equations(item)
    return total


def _peak_resident_mib() -> float:
    """Return this process's peak resident set size (VmHWM) in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(n_steps: int, variant: str) -> dict:
    """Build the model, run one compiling step and `n_steps` timed steps; return the figures."""
    compile_seconds_log = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, seconds, **kwargs: compile_seconds_log.append(seconds)
        if event == "/jax/core/compile/backend_compile_duration"
        else None
    )

    model_config, make_optimizer = _apply_variant(variant, MODEL_CONFIG)
    config = parse_config({
        "model": model_config,
        "solver": {"method": "euler", "n_substeps": 1},
        "training": {"batch_size": N_TRIALS, "n_samples": 1},
    })
    model = build_model(config, n_channels=N_NEURONS, n_inputs=0, key=jax.random.PRNGKey(0), mean_count=0.3)
    params, static = eqx.partition(model, trainable_filter(model))
    if variant in ("strong_dtypes", "all"):
        params = jax.tree_util.tree_map(lambda leaf: leaf.astype(leaf.dtype), params)
    optimizer = make_optimizer(config.training)
    opt_state = optimizer.init(params)
    train_step = train_module.make_train_step(static, optimizer, t0=0.0, bin_width=BIN_WIDTH, n_samples=1)

    # Same spike counts as the peers: Poisson(0.3) from key 1.
    y = jax.random.poisson(jax.random.PRNGKey(1), 0.3, (N_TRIALS, N_BINS, N_NEURONS)).astype(jnp.float32)
    stimulus = jnp.zeros((N_TRIALS, N_BINS, 0), jnp.float32)
    mask = jnp.ones_like(y)
    beta = jnp.float32(1.0)
    # Keys are made before timing, so no timed step compiles a key operation.
    keys = [jax.random.PRNGKey(2 + step) for step in range(n_steps + 1)]
    jax.block_until_ready((y, mask, keys))

    compiles_before = len(compile_seconds_log)

    start = time.perf_counter()
    params, opt_state, terms, finite, _ = train_step(params, opt_state, y, stimulus, mask, keys[0], beta)
    jax.block_until_ready((params, opt_state, terms))
    first_call_s = time.perf_counter() - start
    compiles_first = len(compile_seconds_log)

    step_seconds = []
    for key in keys[1:]:
        start = time.perf_counter()
        params, opt_state, terms, finite, _ = train_step(params, opt_state, y, stimulus, mask, key, beta)
        jax.block_until_ready((params, opt_state, terms))
        step_seconds.append(time.perf_counter() - start)

    # Traced after timing, so that tracing here does not warm any cache the first call would fill.
    jaxpr = jax.make_jaxpr(train_step)(params, opt_state, y, stimulus, mask, keys[0], beta).jaxpr
    n_equations = _count_equations(jaxpr)

    return {
        "variant": variant,
        "median_s": statistics.median(step_seconds),
        "step_s": step_seconds,
        "first_call_s": first_call_s,
        "compile_s": sum(compile_seconds_log[compiles_before:compiles_first]),
        "recompiles_in_timed_steps": len(compile_seconds_log) - compiles_first,
        "recompile_s": sum(compile_seconds_log[compiles_first:]),
        "jaxpr_equations": n_equations,
        "loss": float(terms["loss"]),
        "finite": bool(finite),
        "peak_rss_mib": _peak_resident_mib(),
        "jax_version": jax.__version__,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps after the compiling first call (default 10)")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="baseline", help="monkeypatch to apply first")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps is {args.steps}; expected an integer >= 1")
    print(json.dumps(measure(args.steps, args.variant)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
