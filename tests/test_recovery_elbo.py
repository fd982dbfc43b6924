"""Wilson-Cowan constants recovered by neuroude's own variational fit (full ELBO).

The data come from the simulation of the Wilson-Cowan case in `test_recovery_mechanistic`. It
uses the same constants, start state, process noise (0.02) and observation noise (0.02), with E
observed and I hidden. Here it runs on 12 trials of 0.3 s saved as a recording. That file fits an ODE shortcut.
The fit here is `fit_run`, the path a user takes. It fits a latent SDE with additive process noise,
the GRU recognition model for the initial state and the posterior drift correction. The Gaussian
readout and the input gains (from 0.5, true 1) are learned too, and the loss is the full ELBO. The
four constants start 19-20 % off. `evaluation.constant_intervals: laplace` writes the
identifiability report into `metrics.json`, and every constant it calls identifiable must be within
5 % of the truth. The values checked are the trained ones (`fit_estimate`), not the Laplace mode.

Measured with 500 steps at learning rate 0.04, errors of the trained values in % (the config
seed varies, the simulated data stay the same):

    PYTHONPATH=src python tests/test_recovery_elbo.py 500 1 2 3

| config seed   | tau_e   | tau_i   | w_ee   | w_ie    | report                                 |
|---------------|---------|---------|--------|---------|----------------------------------------|
| 0 (the test)  | +1.85   | +1.84   | -1.25  | +2.72   | all identifiable                       |
| 1             | +1.35   | +1.53   | -1.54  | -0.39   | all identifiable                       |
| 2             | -86.7   | -97.5   | -8.36  | +21.5   | tau_e weakly, the other three identifiable |
| 3             | +3.47   | +0.21   | -0.96  | +1.35   | all identifiable                       |

With learning rate 0.02, seed 0 ended at w_ie +5.97 % after 500 steps and within 2 % of the truth
for all four after 1000. Seed 2 at learning rate 0.02 and 1000 steps ended at -76.4, -97.2, -7.11
and +23.1 %, all four called identifiable, so the lower rate does not rescue it. `time pytest -q
tests/test_recovery_elbo.py` took 38 s of CPU time (user) on 2 shared cores.

NOTE: seed 2 shows that the fit is not robust. It ends in a local optimum with the readout's sign
flipped (weight -3.23, true 1), negative input gains and a test R^2 of 0.21 (0.97 for seed 0),
and its time constants collapse to under 1.5 ms. The report still calls three of the four
constants identifiable, because the Laplace approximation sees only the curvature at that
optimum. A low test R^2 is the sign to look for. The config seed also draws the train,
validation and test split, so the seeds differ in their split as well as their training noise.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from neuroude.config import parse_config
from neuroude.data import Recording, save_npz
from neuroude.dynamics.mechanistic import wilson_cowan
from neuroude.identifiability import IDENTIFIABLE
from neuroude.workflow import fit_run
from test_recovery_mechanistic import (
    WC_OBSERVATION_NOISE, WC_PROCESS_NOISE, WC_TRUE, WC_X0, simulate, smooth_stimulus, wilson_cowan_drift,
)

WC_ELBO_INITIAL = {"tau_e": 0.012, "tau_i": 0.016, "w_ee": 13.0, "w_ie": 18.0}
BIN_WIDTH, N_SUBSTEPS, N_TRIALS, N_BINS = 0.002, 4, 12, 150
TOLERANCE = 0.05


def simulate_recording(path: Path) -> Path:
    u = smooth_stimulus(N_TRIALS, N_BINS, 5.0, seed=0)
    drift = wilson_cowan_drift(WC_TRUE)
    y, _ = simulate(drift, WC_X0, u, BIN_WIDTH, N_SUBSTEPS, WC_PROCESS_NOISE, [[1.0]], (0,), WC_OBSERVATION_NOISE)
    recording = Recording(y=y, ts=np.arange(N_BINS) * BIN_WIDTH, u=u, metadata={"source": "wilson-cowan simulation"})
    save_npz(recording, path)
    return path


def elbo_config(data_path: Path, seed: int = 0, steps: int = 500):
    frozen = [name for name in wilson_cowan.CONSTANTS if name not in WC_ELBO_INITIAL]
    return parse_config({
        "seed": seed,
        "data": {"source": "npz", "path": str(data_path), "split": [0.6667, 0.1667, 0.1666]},
        "model": {"latent_size": 2, "drift": "wilson_cowan", "constants": WC_ELBO_INITIAL, "frozen_constants": frozen,
                  "observation": "gaussian", "observed_states": "model", "encoder": "identity",
                  "interpolation": "hold", "diffusion": "additive", "diffusion_scale": WC_PROCESS_NOISE,
                  "recognition_hidden": 16, "context_size": 8, "correction_width": 16, "n_init_bins": 5},
        "solver": {"method": "euler", "n_substeps": N_SUBSTEPS},
        "training": {"steps": steps, "batch_size": 8, "learning_rate": 0.04, "weight_decay": 0.0,
                     "kl_schedule": "constant", "warmup_steps": 20, "eval_every": 50, "patience": 100},
        "evaluation": {"n_samples": 4, "skip_bins": 5, "glm_lags": 2, "constant_intervals": "laplace"},
    })


def fit_wilson_cowan(folder: Path, seed: int = 0, steps: int = 500) -> dict:
    """Fit and return per constant the fitted value, the error against the truth and the report's class."""
    data_path = simulate_recording(folder / "wilson_cowan.npz")
    run = fit_run(elbo_config(data_path, seed, steps), folder / "run", quiet=True)
    record = run.metrics["constants"]
    status = record["identifiability"]["constants"]
    return {
        name: {
            "fitted": values["fit_estimate"],
            "laplace_mode": values["estimate"],
            "error": (values["fit_estimate"] - WC_TRUE[name]) / WC_TRUE[name],
            "status": status[name]["status"],
        }
        for name, values in record["constants"].items()
    }


@pytest.fixture(scope="module")
def recovered(tmp_path_factory):
    return fit_wilson_cowan(tmp_path_factory.mktemp("recovery_elbo"))


def test_wilson_cowan_report_lists_constants(recovered):
    assert sorted(recovered) == sorted(WC_TRUE)
    identifiable = sorted(name for name, entry in recovered.items() if entry["status"] == IDENTIFIABLE)
    assert identifiable == sorted(WC_TRUE), recovered


def test_wilson_cowan_identifiable_within_tolerance(recovered):
    for name, entry in recovered.items():
        if entry["status"] != IDENTIFIABLE:
            continue
        initial_error = abs(WC_ELBO_INITIAL[name] - WC_TRUE[name]) / WC_TRUE[name]
        message = f"{name}: fitted {entry['fitted']:.5g}, true {WC_TRUE[name]:.5g}, initial {WC_ELBO_INITIAL[name]:.5g}"
        assert abs(entry["error"]) < TOLERANCE, message
        assert abs(entry["error"]) < initial_error, message


if __name__ == "__main__":
    steps = int(sys.argv[1])
    for seed in [int(argument) for argument in sys.argv[2:]] or [0]:
        with tempfile.TemporaryDirectory() as folder:
            result = fit_wilson_cowan(Path(folder), seed, steps)
        for name, entry in result.items():
            print(f"seed {seed} {name}: fitted {entry['fitted']:.5g} ({100 * entry['error']:+.2f} %), "
                  f"Laplace mode {entry['laplace_mode']:.5g}, {entry['status']}")
