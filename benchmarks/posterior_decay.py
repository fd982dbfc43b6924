"""Decay rates of a fitted run's prior and posterior drift along an inferred path, and reversible Heun's parasitic growth.

Reversible Heun cannot damp decay: for a decay rate `lam` its parasitic mode
grows by `exp(asinh(lam h))` per step of size `h` (`neuroude.reversible`). The
check before fitting looks at the initial prior drift only. This script takes a
fitted run and infers one posterior path of its first test trial. Every 10 bins
along that path it takes the fastest decay rate of the prior drift and of the
posterior drift, which adds the correction that pulls the state towards the
data. It then gives the parasitic growth over the trial at the median of each.

    PYTHONPATH=src python benchmarks/posterior_decay.py RUN_DIR
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from neuroude.reversible import parasitic_growth
from neuroude.workflow import load_run


def decay_rates(run, every: int = 10) -> tuple[list[float], list[float], float, int]:
    """Return the prior's and the posterior's decay rates along one posterior path, the step and the step count."""
    model, recording = run.model, run.recording
    test = recording.select(run.split["test"])
    y = jnp.asarray(test.y[0], jnp.float32)
    stimulus = jnp.asarray(test.u[0], jnp.float32) if test.u is not None else jnp.zeros((y.shape[0], 0))
    drive = model.encode(stimulus)
    context = model.recognition.context(model.recognition_input(y), drive)
    path = model.posterior_paths(y, stimulus, float(test.ts[0]), float(recording.dt), jax.random.PRNGKey(0), 1)[0]
    fields = model._fields(drive, context)
    step = float(recording.dt) / model.n_substeps

    prior, posterior = [], []
    for k in range(0, y.shape[0], every):
        prior_jacobian = jax.jacfwd(lambda x: model.sde.drift(0.0, x, drive[k]))(path[k])
        posterior_jacobian = jax.jacfwd(lambda x: fields(0.0, x, k, 0.0)[0])(path[k])
        prior.append(parasitic_growth(prior_jacobian, step, 1)[0])
        posterior.append(parasitic_growth(posterior_jacobian, step, 1)[0])
    return prior, posterior, step, (y.shape[0] - 1) * model.n_substeps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a run folder written by `neuroude fit`")
    arguments = parser.parse_args()

    prior, posterior, step, n_steps = decay_rates(load_run(arguments.run_dir))
    print(f"steps of {step:.3g} s, {n_steps} steps per trial")
    for name, rates in (("prior", prior), ("posterior", posterior)):
        median = float(np.median(rates))
        growth = float(np.exp(min(n_steps * np.arcsinh(median * step), 700.0)))
        print(f"{name} drift: decay rate median {median:.3g}/s, largest {max(rates):.3g}/s; "
              f"parasitic growth over the trial at the median {growth:.3g}")


if __name__ == "__main__":
    main()
