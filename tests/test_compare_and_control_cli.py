"""`neuroude compare` on two tiny configurations, and `neuroude control` on one of the fitted runs."""

import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from neuroude.cli import main
from neuroude.compare import count_parameters
from neuroude.control import ControlledSystem, ControlSettings, summarise
from neuroude.data import Recording, save_npz
from neuroude.workflow import load_run

from conftest import tiny_config, tiny_recording

N_BINS = 20

# Wide input bounds and 50 ms bins let the input move the linear drift's state (decay time 0.1 s) far from rest.
BOUNDS = ("--u-min", "-10", "--u-max", "10")


def write_recording(path, seed=0):
    recording = tiny_recording(n_trials=10, n_time=N_BINS, seed=seed)
    save_npz(Recording(y=recording.y, ts=recording.ts * 5.0, u=recording.u, metadata={"source": "test"}), path)


def write_config(path, data_path, **model):
    config = tiny_config(data={"source": "npz", "path": str(data_path)}, model=model)
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return path


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    write_recording(folder / "data.npz")
    # The linear drift reads the stimulus directly, so the input moves its latent state strongly.
    linear = write_config(folder / "linear.yaml", folder / "data.npz", drift="linear", encoder="identity",
                          diffusion_scale=0.05)
    network = write_config(folder / "network.yaml", folder / "data.npz", drift_time_constant=0.2)
    code = main(["compare", str(linear), str(network), "--out", str(folder / "out"), "--steps", "4", "--quiet"])
    assert code == 0
    return folder


def test_compare_writes_table_and_figure(compared, capsys):
    out = compared / "out"
    rows = list(csv.DictReader((out / "compare.csv").open()))
    summary = json.loads((out / "compare.json").read_text())

    assert [row["name"] for row in rows] == ["linear", "network"]
    assert [row["name"] for row in summary["runs"]] == ["linear", "network"]
    assert (out / "compare.png").stat().st_size > 0
    for row in summary["runs"]:
        assert row["heldout_elbo"] is not None and np.isfinite(row["heldout_elbo"]), row
        assert row["bits_per_spike"] is not None and np.isfinite(row["bits_per_spike"]), row
        assert row["fit_seconds"] > 0
        assert row["steps_run"] == 4


def test_compare_rows_match_runs(compared):
    summary = json.loads((compared / "out" / "compare.json").read_text())
    splits = []
    for row in summary["runs"]:
        run = load_run(row["run_folder"])
        assert row["parameters"] == count_parameters(run.model)
        assert row["bits_per_spike"] == run.metrics["test"]["model"]["bits_per_spike"]
        splits.append(run.split)
    assert splits[0] == splits[1]
    assert summary["runs"][0]["parameters"] != summary["runs"][1]["parameters"]


def test_compare_rejects_different_data(tmp_path, capsys):
    for name in ("a", "b"):
        write_recording(tmp_path / f"{name}.npz")
    first = write_config(tmp_path / "first.yaml", tmp_path / "a.npz")
    second = write_config(tmp_path / "second.yaml", tmp_path / "b.npz")

    code = main(["compare", str(first), str(second), "--out", str(tmp_path / "out"), "--steps", "1"])
    error = capsys.readouterr().err
    assert code == 2
    assert "config 'second' has a different data section from 'first'" in error
    assert "['path']" in error
    assert not (tmp_path / "out").exists()


def test_compare_needs_two_configs(tmp_path, capsys):
    write_recording(tmp_path / "a.npz")
    only = write_config(tmp_path / "only.yaml", tmp_path / "a.npz")
    assert main(["compare", str(only), "--out", str(tmp_path / "out")]) == 2
    assert "expected at least 2" in capsys.readouterr().err


@pytest.fixture(scope="module")
def reachable_target(compared):
    """Write a latent target that the linear run reaches under a known input; return it and the zero input's error.

    The zero input's error is measured like the controller's, over noise and the spread of the initial state.
    """
    run = load_run(compared / "out" / "linear")
    model = run.model
    trial = run.split["test"][0]
    stimulus = jnp.asarray(run.recording.u[trial], jnp.float32)
    mean0, std0 = model.recognition.initial_state(jnp.asarray(run.recording.y[trial], jnp.float32),
                                                  model.encode(stimulus))
    system = ControlledSystem.from_model(model, "latent")
    bin_width = float(run.recording.dt)
    known_input = jnp.linspace(-8.0, 8.0, N_BINS)[:, None]
    target = np.array(system.simulate(mean0, known_input, 0.0, bin_width, None))
    # No input can remove the spread of the initial state, so the first 5 bins (2.5 decay times) are not tracked.
    target[:5] = np.nan
    weights = np.isfinite(target).astype(np.float32)

    x0s = mean0 + std0 * jax.random.normal(jax.random.PRNGKey(5), (16, 2))
    zero_input = np.zeros((N_BINS, 1), np.float32)
    terms, _, _ = summarise(system, zero_input, x0s, np.nan_to_num(target), weights, ControlSettings(-10.0, 10.0),
                            0.0, bin_width, jax.random.PRNGKey(6))
    path = compared / "target.npy"
    np.save(path, target)
    return path, terms["tracking_rmse"]


def test_control_open_loop_reaches_target(compared, reachable_target, capsys):
    target_path, rest_error = reachable_target
    run_dir = compared / "out" / "linear"
    code = main(["control", str(run_dir), "--target", str(target_path), "--iterations", "150", "--samples", "8",
                 "--learning-rate", "0.2", *BOUNDS])
    assert code == 0
    assert "tracking_rmse" in capsys.readouterr().out

    summary = json.loads((run_dir / "control.json").read_text())
    assert summary["space"] == "latent"
    assert summary["terms"]["max_bound_violation"] == 0.0
    assert summary["terms"]["tracking_rmse"] < 0.2 * rest_error
    with np.load(run_dir / "control.npz", allow_pickle=False) as arrays:
        assert arrays["input"].shape == (N_BINS, 1)
        assert arrays["output_mean"].shape == (N_BINS, 2)
        assert arrays["input"].min() >= -10.0
        assert arrays["input"].max() <= 10.0
    assert (run_dir / "figures" / "control.png").stat().st_size > 0


def test_control_receding_horizon_tracks(compared, reachable_target):
    target_path, rest_error = reachable_target
    run_dir = compared / "out" / "linear"
    code = main(["control", str(run_dir), "--target", str(target_path), "--mode", "receding_horizon",
                 "--iterations", "30", "--samples", "4", "--learning-rate", "0.3", "--horizon", "6", "--interval", "3",
                 *BOUNDS])
    assert code == 0
    summary = json.loads((run_dir / "control.json").read_text())
    assert summary["mode"] == "receding_horizon"
    assert summary["terms"]["tracking_rmse"] < 0.5 * rest_error


@pytest.mark.parametrize(
    "target, message",
    [
        (np.zeros((N_BINS, 5)), "target has 5 columns; expected 2 (one per latent state) or 3"),
        (np.zeros((N_BINS, 3, 1)), "expected (time, outputs)"),
    ],
)
def test_control_rejects_bad_target(compared, tmp_path, capsys, target, message):
    np.save(tmp_path / "target.npy", target)
    code = main(["control", str(compared / "out" / "linear"), "--target", str(tmp_path / "target.npy")])
    assert code == 2
    assert message in capsys.readouterr().err


def test_control_rejects_wrong_space(compared, tmp_path, capsys):
    np.save(tmp_path / "target.npy", np.zeros((N_BINS, 2)))
    code = main(["control", str(compared / "out" / "linear"), "--target", str(tmp_path / "target.npy"),
                 "--space", "rate"])
    assert code == 2
    assert "target has 2 columns; the model's rate output has 3" in capsys.readouterr().err


def test_control_rejects_unknown_suffix(compared, tmp_path, capsys):
    (tmp_path / "target.txt").write_text("0 0\n")
    code = main(["control", str(compared / "out" / "linear"), "--target", str(tmp_path / "target.txt")])
    assert code == 2
    assert "expected .npy or .csv" in capsys.readouterr().err


def test_control_reads_csv_target(compared, tmp_path, capsys):
    np.savetxt(tmp_path / "target.csv", np.full((N_BINS, 3), 0.5), delimiter=",")
    code = main(["control", str(compared / "out" / "linear"), "--target", str(tmp_path / "target.csv"),
                 "--iterations", "5", "--samples", "2"])
    assert code == 0
    summary = json.loads((compared / "out" / "linear" / "control.json").read_text())
    assert summary["space"] == "rate"


def test_compare_checks_run_folders_first(tmp_path, capsys):
    write_recording(tmp_path / "a.npz")
    first = write_config(tmp_path / "first.yaml", tmp_path / "a.npz")
    second = write_config(tmp_path / "second.yaml", tmp_path / "a.npz")
    (tmp_path / "out" / "second" / "checkpoints").mkdir(parents=True)
    (tmp_path / "out" / "second" / "config.yaml").write_text("seed: 0\n")
    (tmp_path / "out" / "second" / "checkpoints" / "last.eqx").write_bytes(b"neuroude-checkpoint 2\n")

    code = main(["compare", str(first), str(second), "--out", str(tmp_path / "out"), "--steps", "1"])
    assert code == 2
    assert "out/second already contains a run" in capsys.readouterr().err
    assert not (tmp_path / "out" / "first").exists()
