"""Train a rate network to integrate noisy evidence, with no recorded data.

For 500 ms the input is `c + N(0, 1)` per 10 ms bin, with `c` of random sign and
magnitude 0.05, 0.1, 0.2 or 0.4. A go signal then starts a 100 ms response period, in
which the output must report the sign of `c`. The model is the SDE
`tau dx = (-x + J tanh(x) + B u + b) dt + sigma dW` (64 units, tau = 20 ms,
sigma = 0.05) read out linearly, trained with Adam on fresh trials. The script prints
the held-out accuracy before and after training, beside that of the ideal observer,
which reports the sign of the summed evidence. Accuracy is the fraction of bins in the
second half of the response period where the output has the sign of `c`, so chance is 0.5.

    python examples/normative_evidence.py [--steps N] [--seed N]

With the default 1000 steps and seed 0 the script printed an untrained accuracy of
0.508, a trained accuracy of 0.807 and an ideal-observer accuracy of 0.832. It took 99 s
on 2 CPU cores shared with other jobs.
"""

from __future__ import annotations

import argparse
from functools import partial

import jax
import numpy as np

from neuroude.tasks import TaskModel, evidence_integration, task_accuracy, train_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="training steps (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    arguments = parser.parse_args()

    task = partial(evidence_integration, n_bins=60, stimulus_bins=50, response_bins=10,
                   coherences=(0.05, 0.1, 0.2, 0.4))
    held_out = task(500, seed=10_000 + arguments.seed)
    model = TaskModel(2, 1, state_size=64, drift="rate_network", noise=0.05, key=jax.random.PRNGKey(arguments.seed))
    before = task_accuracy(model, held_out, jax.random.PRNGKey(1))

    model, losses = train_task(model, task, steps=arguments.steps, batch_size=32, learning_rate=5e-3,
                               seed=arguments.seed)
    after = task_accuracy(model, held_out, jax.random.PRNGKey(1))
    summed = held_out.inputs[:, :, 0].sum(axis=1)
    answers = held_out.targets[:, :, 0].sum(axis=1)
    ideal = float(np.mean(np.sign(summed) == np.sign(answers)))
    print(f"evidence integration, {arguments.steps} steps: loss {losses[:10].mean():.4f} -> {losses[-10:].mean():.4f}")
    print(f"held-out accuracy: untrained {before:.3f}, trained {after:.3f}, ideal observer {ideal:.3f} (chance 0.5)")


if __name__ == "__main__":
    main()
