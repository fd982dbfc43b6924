"""Grey-box recovery: a network closure of the FitzHugh-Nagumo recovery term learns the true term.

The data: 48 trials of 100 bins of 0.1 s from a FitzHugh-Nagumo SDE (a = 0.7, b = 0.8,
tau = 12.5, time_scale = 10 /s, i_ext = 0.5, input gain 1.0, additive process noise 0.2)
driven by a smoothed random stimulus, read out by 16 Poisson neurons through a log-linear
readout of (v, w) with a mean of 1 spike per bin. Trials start from v uniform in
[-2.5, 2.5] and w uniform in [-1, 2].

The grey box is FitzHugh-Nagumo with the recovery term replaced by a network `g(v, w)`
(`closure: recovery`), so that dw/dt = time_scale * g(v, w). The true term in seconds is

    dw/dt = time_scale * (v + a - b w) / tau = 0.56 + 0.8 v - 0.64 w   (1/s)

The black box is a network drift (`drift: mlp`) fitted to the same data with the same
solver, training settings and seed.

Identifiability. The recording fixes the latent state only up to exact symmetries of the
model family, and each changes the learned term:

- Mirror: (v, w) -> (-v, 2 i_ext - w) with the input gain negated and the readout's
  weights and offsets adjusted leaves the likelihood unchanged. It maps the true term to
  one with the same v and w coefficients but the constant (2 b i_ext - a) / tau. Fits land in either
  mirror image (seed 0 mirrored, seeds 1 and 2 did not). The comparison fixes the gauge by the
  convention that the stimulus depolarises v (input gain > 0): a fit with a negative gain
  is mapped back through the mirror before its term is compared.
- Time scale: time_scale multiplies g in dw/dt, and time_scale is identified only through
  the fast jumps of v, which last about one bin, so time_scale and g trade off. The
  comparison is of time_scale * g, the recovery rate in 1/s, which the data identify.
- i_ext is frozen at its true value (shifting w by c and i_ext by c leaves dv/dt unchanged).

With the white-box test's input gain (0.3) and process noise (0.1), the states stay close to
the limit cycle, a closed curve, so the data constrain g(v, w) along that curve only. In two
such fits the learned term matched the truth to 11 % and 13 % (relative RMSE), and the
symbolic fit needed spurious cubic terms. The larger drive and noise used here spread the
visited states over the plane.

Measured on 2 CPU cores, with 600 steps and learning rate 0.03. The seed sets the simulation
and the fits alike. Each solver bin draws its Brownian increments from its own key, so the
fits follow a different noise path than when these settings were chosen. With threshold 0.05,
seed 0 then kept a spurious v^2 term (-0.041) with its constant 14 % off. The symbolic fit
therefore uses threshold 0.1, with monomials of (v, w) up to degree 2:

| quantity                                         | seed 0 (this test)    | seed 1                |
|--------------------------------------------------|-----------------------|-----------------------|
| recovered constant, v, w (true 0.56, 0.8, -0.64) | 0.514, 0.839, -0.603  | 0.566, 0.834, -0.607  |
| coefficient errors, (fit - true) / |true|        | -8.2, +4.9, -5.8 %    | +1.0, +4.3, -5.2 %    |
| terms beyond constant, v, w                      | none                  | none                  |
| R^2 of the equation on the sampled term          | 0.995                 | 0.998                 |

With threshold 0.15 a degree-3 library also returns only the constant, v and w on both seeds.
The target for the coefficients is 10 %. The test asserts 12 %, so that rounding differences
on another CPU, which change a 600-step fit slightly, do not flip it.
"""

import json

import numpy as np
import pytest

from conftest import load_example
from neuroude.workflow import fit_run, load_run

# The simulation, configs and mirror mapping are the example script's, so the test checks what users run.
example = load_example("symbolic_recovery")
TRUE_CONSTANTS = example.TRUE_CONSTANTS
TRUE_RECOVERY_RATE = example.TRUE_RECOVERY_RATE
STEPS = 600
SEED = 0

pytestmark = pytest.mark.slow

# The measured values in the module docstring plus a margin; the coefficient bound is the target itself.
TOLERANCE_RELATIVE_RMSE = 0.15
TOLERANCE_COEFFICIENT = 0.12


def learned_rate_at(drift, true_states):
    """Return time_scale * g of the fitted closure at true states (N, 2), in the true model's coordinates."""
    # The mirror is its own inverse, so it also maps true states into the fitted model's coordinates.
    model_states, _ = example.to_stimulus_gauge(drift, true_states, np.zeros(len(true_states)))
    rates = float(drift.mechanistic.time_scale.value) * np.asarray(drift.closure_term(model_states))
    _, rates = example.to_stimulus_gauge(drift, model_states, rates)
    return rates


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recovery_greybox")
    data_path, truth = example.simulate(folder, SEED)
    scores = {}
    for kind in ("grey", "black"):
        run = fit_run(example.make_config(data_path, kind, STEPS, SEED), folder / kind, quiet=True)
        scores[kind] = json.loads(run.folder.metrics.read_text())["test"]["model"]["bits_per_spike"]
    # The last checkpoint, as in the white-box test: 8-sample validation scores are too noisy to pick a term by.
    grey = load_run(folder / "grey", "last")
    return {"truth": truth, "scores": scores, "grey": grey}


def test_simulation_spreads_states(fitted):
    states = fitted["truth"]["x"].reshape(-1, 2)
    # The states must cover the plane, not only the limit cycle, for g(v, w) to be identified off the cycle.
    # A low correlation of v and w is a coarse check of that: the measured value is 0.33.
    assert abs(np.corrcoef(states.T)[0, 1]) < 0.6
    assert states[:, 0].min() < -2.0
    assert states[:, 0].max() > 2.0


def test_learned_term_matches_truth_on_attractor(fitted):
    drift = fitted["grey"].model.sde.drift
    states = fitted["truth"]["x"].reshape(-1, 2)
    true_rate = TRUE_CONSTANTS["time_scale"] * (states[:, 0] + TRUE_CONSTANTS["a"] - TRUE_CONSTANTS["b"] * states[:, 1])
    true_rate = true_rate / TRUE_CONSTANTS["tau"]

    learned = learned_rate_at(drift, states)
    relative_rmse = np.sqrt(np.mean((learned - true_rate) ** 2)) / true_rate.std()
    assert relative_rmse < TOLERANCE_RELATIVE_RMSE, f"relative RMSE {relative_rmse:.3f}"


def test_grey_box_beats_black_box(fitted):
    scores = fitted["scores"]
    assert scores["grey"] > scores["black"], f"test bits per spike: grey {scores['grey']:.3f}, black {scores['black']:.3f}"


def test_symbolic_recovery_of_closure(fitted):
    fit, _ = example.recover_recovery_rate(fitted["grey"])
    active = fit.active_terms()
    assert set(active) == set(TRUE_RECOVERY_RATE), fit.equation()
    for name, true_value in TRUE_RECOVERY_RATE.items():
        error = abs(active[name] - true_value) / abs(true_value)
        assert error < TOLERANCE_COEFFICIENT, f"{name}: {active[name]:.4f}, true {true_value}; {fit.equation()}"
    assert fit.r_squared[0] > 0.99
