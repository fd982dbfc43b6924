"""The tutorial scripts under examples/, run with small settings, checked on what they print and write."""

import contextlib
import io
import json
import math

import numpy as np
import pytest

from conftest import load_example
from neuroude.data import load_npz

# FitzHugh-Nagumo rest state for a = 0.7, b = 0.8 and no current: v - v^3/3 - w = 0 with w = (v + a) / b.
FHN_REST = [-1.19941, -0.62426]


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    folder = tmp_path_factory.mktemp("analysis")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = load_example("analyze_fitzhugh_nagumo").main(["--small", "--out", str(folder)])
    return folder, result, printed.getvalue()


def test_analysis_hopf_currents_closed_form(analysis):
    folder, result, printed = analysis
    written = json.loads((folder / "analysis.json").read_text())

    assert written["hopf_currents"] == pytest.approx(result["hopf_currents"])
    np.testing.assert_allclose(written["analytic_hopf_currents"], [0.33128, 1.41872], atol=1e-5)
    np.testing.assert_allclose(written["hopf_currents"], written["analytic_hopf_currents"], atol=1e-4)
    assert "Hopf point: continuation I = 0.3312" in printed
    for level in written["levels"]:
        assert (folder / level["figure"]).is_file()
    assert (folder / "continuation.png").is_file()


def test_analysis_fixed_points_per_current(analysis):
    _, result, _ = analysis
    stability = {}
    for level in result["levels"]:
        fixed = [point for point in level["points"] if point["kind"] == "fixed point"]
        assert len(fixed) == 1, level
        stability[level["current"]] = fixed[0]["stability"]
        if level["current"] == 0.0:
            np.testing.assert_allclose(fixed[0]["state"], FHN_REST, atol=1e-3)
    # Between the two Hopf currents the equilibrium is unstable and the model spikes.
    assert stability == {0.0: "stable focus", 0.5: "unstable focus", 1.6: "stable focus"}


def test_control_suppresses_oscillation(tmp_path, capsys):
    result = load_example("control_stuart_landau").main(["--small", "--iterations", "100", "--out", str(tmp_path)])
    written = json.loads((tmp_path / "control.json").read_text())
    printed = capsys.readouterr().out

    assert written["uncontrolled_amplitude"] == pytest.approx(1.0, abs=0.1)
    assert written["controlled_amplitude"] < 0.2
    assert written["max_abs_input"] <= written["input_bound"]
    assert written["last_cost"] < 0.5 * written["first_cost"]
    assert f"with the designed input {result['controlled_amplitude']:.3f}" in printed


def test_flipflop_small_training_helps():
    result = load_example("normative_flipflop").main(["--small", "--steps", "60"])
    losses = np.asarray(result["losses"])
    assert losses.shape == (60,)
    assert losses[-10:].mean() < losses[:10].mean()
    assert 0.0 <= result["untrained_accuracy"] <= 1.0
    assert result["trained_accuracy"] > result["untrained_accuracy"]


def test_calcium_trace_steady_state():
    calcium_imaging = load_example("calcium_imaging")
    rates = np.full((1, 50, 2), 5.0)  # spikes per second
    traces = calcium_imaging.calcium_traces(rates, 0.4, 0.02)
    gamma = math.exp(-0.02 / 0.4)
    np.testing.assert_allclose(traces, 5.0 * 0.02 / (1.0 - gamma), rtol=1e-10)

    step = np.concatenate([np.zeros((1, 10, 1)), np.full((1, 200, 1), 5.0)], axis=1)
    rise = calcium_imaging.calcium_traces(step, 0.4, 0.02)[0, 10:, 0]
    expected = 5.0 * 0.02 * (1.0 - gamma ** np.arange(1, 201)) / (1.0 - gamma)
    np.testing.assert_allclose(rise, expected, rtol=1e-10)


def test_calcium_example_writes_decay_times(tmp_path, capsys):
    result = load_example("calcium_imaging").main(["--small", "--steps", "2", "--out", str(tmp_path)])
    written = json.loads((tmp_path / "calcium.json").read_text())
    printed = capsys.readouterr().out
    recording = load_npz(tmp_path / "calcium.npz")

    assert recording.y.shape == (12, 40, 12)
    assert recording.dt == pytest.approx(0.02)
    assert len(written["recovered_decay_times"]) == 12
    assert all(value > 0.0 and math.isfinite(value) for value in written["recovered_decay_times"])
    assert written["median_decay_time"] == pytest.approx(result["median_decay_time"])
    assert f"recovered, median over channels: {written['median_decay_time']:.3f} s" in printed
    assert "r_squared" in written["test_metrics"]["model"]
