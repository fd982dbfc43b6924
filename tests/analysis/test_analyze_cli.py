"""`neuroude analyze` on a tiny fitted FitzHugh-Nagumo run, checked against the fitted constants.

The run's recording has behaviour, so its metrics.json is also checked for behaviour decoding.
"""

import contextlib
import io
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config, tiny_recording

from neuroude.analysis.fitted import encode_constant_input, prior_diffusion, prior_drift
from neuroude.analysis.noise import stationary_spread
from neuroude.analysis.parameters import check_parameter_names
from neuroude.analysis.report import format_level
from neuroude.cli import main
from neuroude.data import Recording, save_npz
from neuroude.decoding import CALIBRATION_LEVELS
from neuroude.errors import ConfigError
from neuroude.workflow import fit_run, load_run

LEVELS = [0.0, 1.0]
CONTINUATION = (-1.0, 2.0)
CONSTANT_CONTINUATION = ("i_ext", -0.5, 1.0)
# Grid points stay at least 0.12 in i_ext away from the Hopf currents (0.21 to 0.37 for b from 0.6 to 0.9).
REGIMES = ("i_ext", -0.5, 1.0, "b", 0.6, 0.9)
REGIME_POINTS = 4


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("analyze")
    # The recording carries behaviour and the model a behaviour head, so that the same fit also checks the
    # behaviour decoding written to metrics.json.
    base = tiny_recording()
    behaviour = np.cumsum(base.u, axis=1) * 0.2 + 0.05 * np.random.default_rng(3).normal(size=base.u.shape)
    recording = Recording(y=base.y, ts=base.ts, u=base.u, behaviour=behaviour, metadata={"source": "test"})
    save_npz(recording, folder / "recording.npz")
    config = tiny_config(
        data={"source": "npz", "path": str(folder / "recording.npz")},
        model={"drift": "fitzhugh_nagumo", "constants": {"time_scale": 10.0}, "encoder": "identity",
               "behaviour": {"weight": 1.0}},
    )
    fit_run(config, folder / "run", quiet=True, steps=2)
    # The analysis reads the best checkpoint, so the expected values come from the same one.
    return load_run(folder / "run")


@pytest.fixture(scope="module")
def analysis_and_output(fitted_run):
    arguments = ["analyze", str(fitted_run.folder.root), "--input", *map(str, LEVELS),
                 "--continuation", *map(str, CONTINUATION), "--starts", "16",
                 "--continuation-constant", *map(str, CONSTANT_CONTINUATION),
                 "--regimes", *map(str, REGIMES), "--regime-points", str(REGIME_POINTS)]
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        assert main(arguments) == 0
    return json.loads((fitted_run.folder.root / "analysis.json").read_text()), output.getvalue()


@pytest.fixture(scope="module")
def analysis(analysis_and_output):
    return analysis_and_output[0]


def fitted_constants(run):
    drift = run.model.sde.drift
    names = ("a", "b", "tau", "i_ext")
    return {name: float(getattr(drift, name).value) for name in names} | {"gain": float(drift.input_gain[0])}


def fixed_point_from_cubic(a, b, current):
    """The real root of v - v^3/3 - (v + a)/b + I = 0 (unique for b < 1), and w = (v + a) / b."""
    roots = np.roots([-1.0 / 3.0, 0.0, 1.0 - 1.0 / b, current - a / b])
    v = roots[np.abs(roots.imag) < 1e-9].real[0]
    return np.array([v, (v + a) / b])


def test_analyze_writes_figures_and_json(fitted_run, analysis):
    root = fitted_run.folder.root
    for level in analysis["levels"]:
        assert (root / level["figure"]).is_file()
    assert (root / analysis["continuation"]["figure"]).is_file()
    assert analysis["latent_size"] == 2
    assert analysis["drift"] == "FitzHughNagumo"


def test_fixed_points_match_fitted_cubic(fitted_run, analysis):
    constants = fitted_constants(fitted_run)
    assert [level["stimulus"] for level in analysis["levels"]] == [[value] for value in LEVELS]
    for level, stimulus in zip(analysis["levels"], LEVELS):
        fixed = [point for point in level["points"] if point["kind"] == "fixed point"]
        current = constants["i_ext"] + constants["gain"] * stimulus
        expected = fixed_point_from_cubic(constants["a"], constants["b"], current)
        assert len(fixed) == 1, level["points"]
        np.testing.assert_allclose(fixed[0]["state"], expected, atol=1e-3)


def test_continuation_finds_fitted_hopf_input(fitted_run, analysis):
    constants = fitted_constants(fitted_run)
    v = -math.sqrt(1.0 - constants["b"] / constants["tau"])
    hopf_current = (v + constants["a"]) / constants["b"] - v + v**3 / 3.0
    hopf_input = (hopf_current - constants["i_ext"]) / constants["gain"]
    assert CONTINUATION[0] < hopf_input < CONTINUATION[1]

    branches = analysis["continuation"]["branches"]
    hopf = [point for branch in branches for point in branch["bifurcations"] if point["kind"] == "hopf"]
    assert len(hopf) >= 1
    np.testing.assert_allclose(hopf[0]["parameter"], hopf_input, atol=1e-3)


def test_analyze_prints_continuation_summary(analysis_and_output):
    analysis, output = analysis_and_output
    branches = analysis["continuation"]["branches"]
    points = [point for branch in branches for point in branch["bifurcations"]]
    low, high = CONTINUATION
    assert f"continuation in stimulus level from {low:.4g} to {high:.4g}: {len(branches)} branches" in output
    assert f"{len(points)} bifurcation points" in output
    hopf = next(point for point in points if point["kind"] == "hopf")
    assert f"hopf at stimulus level = {hopf['parameter']:.4g}" in output
    assert f"continuation in {CONSTANT_CONTINUATION[0]} from" in output


def test_format_level_rounds_noise_to_zero():
    assert format_level([-1.19e-09]) == "0"
    assert format_level([-1.19e-09, 0.5]) == "0, 0.5"
    assert format_level([2e-6], scale=1.0) == "2e-06"
    assert format_level([]) == "none"
    assert format_level([2e-6], scale=10.0) == "0"
    assert format_level(0.123456) == "0.123"


def hopf_currents(a, b, tau):
    """The total currents of both Hopf points, where trace J = 1 - v^2 - b / tau vanishes at the equilibrium."""
    currents = []
    for v in (-math.sqrt(1.0 - b / tau), math.sqrt(1.0 - b / tau)):
        currents.append((v + a) / b - v + v**3 / 3.0)
    return currents


def test_constant_continuation_finds_hopf_current(fitted_run, analysis):
    constants = fitted_constants(fitted_run)
    # The stimulus is held at the first --input level, 0, so i_ext alone is the current.
    lower, upper = hopf_currents(constants["a"], constants["b"], constants["tau"])
    name, low, high = CONSTANT_CONTINUATION
    assert low < lower < high < upper

    result = analysis["constant_continuation"]
    assert result["constant"] == name
    assert result["stimulus"] == [LEVELS[0]]
    np.testing.assert_allclose(result["fitted_value"], constants["i_ext"], rtol=1e-6)
    assert (fitted_run.folder.root / result["figure"]).is_file()
    hopf = [point for branch in result["branches"] for point in branch["bifurcations"] if point["kind"] == "hopf"]
    assert len(hopf) == 1
    np.testing.assert_allclose(hopf[0]["parameter"], lower, atol=1e-3)


def test_regimes_match_hopf_boundary(fitted_run, analysis):
    constants = fitted_constants(fitted_run)
    regimes = analysis["regimes"]
    assert regimes["parameters"] == [REGIMES[0], REGIMES[3]]
    assert (fitted_run.folder.root / regimes["figure"]).is_file()
    for i, current in enumerate(regimes["first"]):
        for j, b in enumerate(regimes["second"]):
            lower, upper = hopf_currents(constants["a"], b, constants["tau"])
            # Between the Hopf currents the rest state is unstable and FitzHugh-Nagumo spikes periodically.
            expected = "oscillation" if lower < current < upper else "equilibrium"
            assert min(abs(current - lower), abs(current - upper)) > 0.1, (current, b)
            assert regimes["labels"][i][j] == expected, (current, b)


def test_black_box_drift_has_no_constants(make_model):
    with pytest.raises(ConfigError, match="has no mechanistic constants"):
        check_parameter_names(make_model(), ["tau"])
    check_parameter_names(make_model(), ["input"])


def test_fitted_helpers_read_prior(fitted_run):
    model = fitted_run.model
    u = encode_constant_input(model, 0.5, 1)
    np.testing.assert_allclose(np.asarray(u), [0.5])
    sigma = prior_diffusion(model)(jnp.zeros(2), u)
    assert sigma.shape == (2,)
    velocity = prior_drift(model)(jnp.zeros(2), u)
    np.testing.assert_allclose(velocity, model.sde.drift(0.0, jnp.zeros(2), u))


def test_fitted_spread_near_lyapunov(fitted_run, analysis):
    # At the fitted noise (about 0.3) paths cross the threshold of this excitable model and spike, so the
    # test scales the fitted diffusion by 0.1. Paths then stay within about 0.03 of the rest state, where
    # the drift is close to linear, so the Lyapunov covariance should match within the 25% allowed here.
    model = fitted_run.model
    u = encode_constant_input(model, 0.0, 1)
    rest = analysis["levels"][0]["points"][0]["state"]
    fitted_diffusion = prior_diffusion(model)
    spread = stationary_spread(prior_drift(model), lambda x, u: 0.1 * fitted_diffusion(x, u), u, rest,
                               jax.random.PRNGKey(0), n_paths=64, dt=0.005, duration=20.0, burn_in=2.0,
                               record_every=20)
    np.testing.assert_allclose(np.diag(spread.covariance), np.diag(spread.linear_covariance), rtol=0.25)
    np.testing.assert_allclose(spread.mean, rest, atol=0.02)


def test_encode_constant_input_rejects_wrong_size(fitted_run):
    with pytest.raises(ConfigError, match="expected one per input channel \\(1\\)"):
        encode_constant_input(fitted_run.model, [1.0, 2.0], 1)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--input", "1,2"], "expected one per input channel"),
        (["--input", "fast"], "--input level 'fast' is not a number"),
        (["--continuation", "1", "1"], "expected two different stimulus levels"),
        (["--starts", "0"], "n_starts is 0"),
        (["--continuation-constant", "gamma", "0", "1"],
         "has no constant 'gamma'; expected 'input' or one of ['a', 'b', 'i_ext', 'tau', 'time_scale']"),
        (["--continuation-constant", "a", "0", "high"], "expected two numbers, LOW and HIGH"),
        (["--regimes", "input", "0", "1", "input", "0", "2"], "names 'input' twice"),
        (["--regimes", "a", "0", "1", "tau", "3", "3"], "regime range of 'tau' is [3.0, 3.0]"),
    ],
)
def test_analyze_rejects_bad_arguments(fitted_run, capsys, extra, message):
    assert main(["analyze", str(fitted_run.folder.root), *extra]) == 2
    assert message in capsys.readouterr().err


def test_analyze_rejects_missing_run(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nothing")]) == 2
    assert "not found" in capsys.readouterr().err



def test_fit_writes_behaviour_calibration(fitted_run):
    root = fitted_run.folder.root
    metrics = json.loads((root / "metrics.json").read_text())
    decoding = metrics["behaviour_decoding"]
    assert (root / "figures" / "behaviour_calibration.png").is_file()
    for method in ("ridge", "behaviour_head"):
        scores = decoding[method]
        assert np.isfinite(scores["r_squared"]["mean"])
        for level in ("0.5", "0.9"):
            assert 0.0 <= scores["coverage"][level] <= 1.0
            assert scores["mean_interval_width"][level] > 0.0
        assert scores["calibration"]["nominal"] == list(CALIBRATION_LEVELS)
        empirical = scores["calibration"]["empirical"]
        assert all(0.0 <= value <= 1.0 for value in empirical)
        # Nested intervals: a wider level can only contain more values.
        assert all(a <= b for a, b in zip(empirical, empirical[1:]))
