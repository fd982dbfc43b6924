"""Sweeps: sweep files are validated before any fit, and the fits run as tasks on a local Ray instance."""

import csv
import json
import subprocess
import sys

import pytest
import yaml

from conftest import tiny_config, tiny_recording
from neuroude.config import dump_config
from neuroude.data import save_npz
from neuroude.errors import ConfigError
from neuroude.sweep import expand_sweep, import_ray, load_sweep, run_sweep


def write_yaml(path, value):
    path.write_text(yaml.safe_dump(value))
    return path


@pytest.fixture(scope="module")
def sweep_folder(tmp_path_factory):
    """A folder with a tiny recording, a tiny base config beside it and a sweep file naming both."""
    folder = tmp_path_factory.mktemp("sweep")
    save_npz(tiny_recording(), folder / "tiny.npz")
    config = tiny_config(data={"source": "npz", "path": "tiny.npz"}, training={"steps": 2})
    (folder / "tiny.yaml").write_text(dump_config(config))
    # training.devices 2 passes validation but fails in the fit on a machine with one CPU device.
    write_yaml(folder / "sweep.yaml", {
        "base": "tiny.yaml",
        "overrides": {"training.eval_every": 2},
        "grid": {"training.devices": [1, 2]},
    })
    return folder


def sweep_error(folder, content) -> str:
    path = write_yaml(folder / "bad.yaml", content)
    with pytest.raises(ConfigError) as error:
        expand_sweep(load_sweep(path), folder)
    return str(error.value)


def test_expand_names_every_combination(sweep_folder):
    path = write_yaml(sweep_folder / "grid.yaml", {"base": "tiny.yaml", "overrides": {"training.eval_every": 2},
                                                   "grid": {"seed": [0, 1], "training.devices": [1, 2]}})
    combinations = expand_sweep(load_sweep(path), sweep_folder)
    names = [combination.name for combination in combinations]
    assert names == ["seed=0__devices=1", "seed=0__devices=2", "seed=1__devices=1", "seed=1__devices=2"]
    assert [c.config.seed for c in combinations] == [0, 0, 1, 1]
    assert [c.config.training.devices for c in combinations] == [1, 2, 1, 2]
    assert all(c.config.training.eval_every == 2 for c in combinations)
    assert all(c.config.data.path == str(sweep_folder / "tiny.npz") for c in combinations)


def test_expand_configs_prefix_names(sweep_folder):
    write_yaml(sweep_folder / "other.yaml", yaml.safe_load((sweep_folder / "tiny.yaml").read_text()))
    path = write_yaml(sweep_folder / "two.yaml", {"configs": ["tiny.yaml", "other.yaml"], "grid": {"seed": [3]}})
    names = [combination.name for combination in expand_sweep(load_sweep(path), sweep_folder)]
    assert names == ["tiny__seed=3", "other__seed=3"]


def test_unknown_sweep_key_rejected(sweep_folder):
    message = sweep_error(sweep_folder, {"base": "tiny.yaml", "grids": {"seed": [0]}})
    assert "unknown sweep key 'grids'" in message
    assert "Did you mean 'grid'?" in message


def test_unknown_override_key_rejected(sweep_folder):
    message = sweep_error(sweep_folder, {"base": "tiny.yaml", "grid": {"training.learning_rat": [0.1]}})
    assert "override key 'training.learning_rat' is not a RunConfig setting" in message
    assert "Did you mean 'learning_rate'?" in message


def test_every_sweep_problem_reported(sweep_folder):
    message = sweep_error(sweep_folder, {"base": "tiny.yaml", "grid": {"training.learnin_rate": [0.1]}, "extra": 1})
    assert "unknown sweep key 'extra'" in message
    assert "override key 'training.learnin_rate' is not a RunConfig setting" in message


def test_override_below_value_rejected(sweep_folder):
    message = sweep_error(sweep_folder, {"base": "tiny.yaml", "overrides": {"seed.value": 1}})
    assert "goes below 'seed', which is a value" in message


def test_invalid_override_value_names_run(sweep_folder):
    message = sweep_error(sweep_folder, {"base": "tiny.yaml", "grid": {"training.learning_rate": [0.01, -1]}})
    assert "sweep run 'learning_rate=-1'" in message
    assert "training.learning_rate" in message


def test_empty_grid_values_rejected(sweep_folder):
    message = sweep_error(sweep_folder, {"base": "tiny.yaml", "grid": {"seed": []}})
    assert "grid key 'seed' has no values" in message


def test_base_and_configs_rejected(sweep_folder):
    message = sweep_error(sweep_folder, {"base": "tiny.yaml", "configs": ["tiny.yaml"]})
    assert "both 'base' and 'configs'" in message


def test_missing_ray_names_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"install neuroude\[sweep\]"):
        import_ray()


def run_sweep_command(sweep_file, out):
    """Run `neuroude sweep` in its own process; return its exit status, CSV rows and JSON rows.

    The sweep starts its local Ray instance in that process, not in the test process, whose JAX
    state and memory a Ray instance should not share.
    """
    pytest.importorskip("ray", reason="sweeps need Ray, which the dev and sweep extras install")
    command = [sys.executable, "-m", "neuroude.cli", "sweep", str(sweep_file), "--out", str(out), "--max-parallel", "2"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert completed.returncode in (0, 1), completed.stderr[-4000:]
    with open(out / "sweep.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    return completed.returncode, rows, json.loads((out / "sweep.json").read_text())["runs"]


@pytest.fixture(scope="module")
def first_sweep(sweep_folder):
    """Run the sweep once through the command line; return its exit status, CSV rows and JSON rows."""
    return run_sweep_command(sweep_folder / "sweep.yaml", sweep_folder / "out")


def test_sweep_fits_every_combination(first_sweep, sweep_folder):
    _, rows, runs = first_sweep
    assert [row["name"] for row in rows] == ["devices=1", "devices=2"]
    done = [row for row in rows if row["training.devices"] == "1"]
    assert [row["status"] for row in done] == ["done"]
    for row in done:
        assert row["steps_run"] == "2"
        assert float(row["fit_seconds"]) >= 0
        assert (sweep_folder / "out" / row["name"] / "metrics.json").is_file()
    assert [run["overrides"] for run in runs] == [{"training.devices": 1}, {"training.devices": 2}]


def test_sweep_records_validation_and_test_scores(first_sweep, sweep_folder):
    _, _, runs = first_sweep
    run = runs[0]
    metrics = json.loads((sweep_folder / "out" / run["name"] / "metrics.json").read_text())
    assert run["validation_bits_per_spike"] == metrics["validation"]["model"]["bits_per_spike"]
    assert run["test_bits_per_spike"] == metrics["test"]["model"]["bits_per_spike"]
    assert run["test_log_likelihood"] == metrics["test"]["model"]["log_likelihood"]
    assert run["test_r_squared"] is None


def test_sweep_failed_fit_recorded(first_sweep):
    status, rows, _ = first_sweep
    failed = [row for row in rows if row["training.devices"] == "2"]
    assert status == 1
    assert [row["status"] for row in failed] == ["failed"]
    for row in failed:
        assert "ConfigError: training.devices is 2, but only 1 local devices are present" in row["error"]
        assert row["test_bits_per_spike"] == ""


def test_sweep_rerun_skips_finished(first_sweep, sweep_folder):
    before = {row["name"]: row for row in first_sweep[2]}
    _, _, rows = run_sweep_command(sweep_folder / "sweep.yaml", sweep_folder / "out")
    statuses = {row["name"]: row["status"] for row in rows}
    assert statuses == {"devices=1": "skipped", "devices=2": "failed"}
    for row in rows:
        if row["status"] == "skipped":
            assert row["test_bits_per_spike"] == before[row["name"]]["test_bits_per_spike"]


def test_sweep_changed_config_not_mixed(first_sweep, sweep_folder):
    changed = yaml.safe_load((sweep_folder / "sweep.yaml").read_text())
    changed["overrides"]["training.eval_every"] = 1
    changed["grid"]["training.devices"] = [1]
    path = write_yaml(sweep_folder / "changed.yaml", changed)
    rows = run_sweep(path, sweep_folder / "out")
    # The folder check comes before Ray would start, so this runs in the test process.
    assert [row["status"] for row in rows] == ["failed"]
    assert "holds a fit of a different configuration" in rows[0]["error"]
