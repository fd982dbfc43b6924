"""The `neuroude` command on the packaged recording and on bad input."""

import io
import json
import signal
import sys

import numpy as np
import pytest
import yaml

from neuroude import cli
from neuroude.cli import main
from neuroude.progress import FitProgress

TINY_GRASSHOPPER = {
    "model": {"latent_size": 2, "drift_width": 8, "drift_depth": 1, "encoder_size": 2, "recognition_hidden": 8,
              "context_size": 4, "correction_width": 8},
    "training": {"batch_size": 4, "eval_every": 2},
    "evaluation": {"n_samples": 4, "glm_lags": 5},
}


def write_yaml(path, value):
    path.write_text(yaml.safe_dump(value))
    return path


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    config = write_yaml(folder / "tiny.yaml", TINY_GRASSHOPPER)
    code = main(["fit", str(config), "--out", str(folder / "run"), "--steps", "2", "--quiet"])
    assert code == 0
    return folder / "run"


def test_fit_writes_complete_run_folder(fitted_run):
    for name in ["config.yaml", "metrics.json", "history.csv", "log.txt", "checkpoints/best.eqx",
                 "checkpoints/last.eqx", "figures/training.png", "figures/heldout_predictions.png",
                 "figures/latent_paths.png"]:
        assert (fitted_run / name).is_file(), name


def test_metrics_hold_model_and_baselines(fitted_run):
    metrics = json.loads((fitted_run / "metrics.json").read_text())
    test = metrics["test"]
    for name in ["model", "homogeneous_poisson", "glm_stimulus"]:
        assert np.isfinite(test[name]["bits_per_spike"]), name
    assert metrics["training"]["steps_run"] == 2
    assert metrics["skip_bins"] == 10


def test_resolved_config_written(fitted_run):
    config = yaml.safe_load((fitted_run / "config.yaml").read_text())
    assert config["training"]["steps"] == 2
    assert config["model"]["latent_size"] == 2
    assert config["data"]["source"] == "grasshopper"


def test_evaluate_and_sample(fitted_run, capsys):
    assert main(["evaluate", str(fitted_run)]) == 0
    assert "glm_stimulus" in capsys.readouterr().out
    metrics = json.loads((fitted_run / "metrics.json").read_text())
    assert metrics["training"]["steps_run"] == 2
    assert "re-evaluating" in (fitted_run / "log.txt").read_text()

    assert main(["sample", str(fitted_run), "--n", "3"]) == 0
    assert capsys.readouterr().out == f"written: {fitted_run / 'samples_test.npz'}\n"
    with np.load(fitted_run / "samples_test.npz", allow_pickle=False) as samples:
        assert samples["expected"].shape[1] == 3
        assert samples["observations"].shape == samples["expected"].shape
        assert samples["paths"].shape[-1] == 2
        assert "expected: (trials, samples, time, channels)" in str(samples["description"])
        assert samples["u"].shape[0] == samples["y"].shape[0]


def test_existing_run_folder_rejected(fitted_run, capsys):
    before = (fitted_run / "checkpoints" / "last.eqx").read_bytes()
    code = main(["fit", str(fitted_run.parent / "tiny.yaml"), "--out", str(fitted_run), "--steps", "1", "--quiet"])
    assert code == 2
    assert "already contains a run" in capsys.readouterr().err
    assert (fitted_run / "checkpoints" / "last.eqx").read_bytes() == before


def run_fit_expecting_error(capsys, *arguments):
    code = main(["fit", *map(str, arguments), "--quiet"])
    assert code == 2
    return capsys.readouterr().err


def test_unknown_config_key(tmp_path, capsys):
    config = write_yaml(tmp_path / "c.yaml", {"training": {"stpes": 3}})
    error = run_fit_expecting_error(capsys, config, "--out", tmp_path / "run")
    assert "training.stpes" in error
    assert "Did you mean 'steps'?" in error


def test_wrong_value_type(tmp_path, capsys):
    config = write_yaml(tmp_path / "c.yaml", {"model": {"latent_size": "four"}})
    error = run_fit_expecting_error(capsys, config, "--out", tmp_path / "run")
    assert "model.latent_size" in error
    assert "'four'" in error


def test_missing_config_file(tmp_path, capsys):
    error = run_fit_expecting_error(capsys, tmp_path / "absent.yaml", "--out", tmp_path / "run")
    assert "not found" in error


def test_invalid_yaml(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("model: [unclosed\n")
    error = run_fit_expecting_error(capsys, config, "--out", tmp_path / "run")
    assert "not valid YAML" in error


def test_resume_without_run(tmp_path, capsys):
    error = run_fit_expecting_error(capsys, "--out", tmp_path / "run", "--resume")
    assert "cannot resume" in error


def test_nonpositive_steps(tmp_path, capsys):
    error = run_fit_expecting_error(capsys, "--out", tmp_path / "run", "--steps", "0")
    assert "--steps is 0" in error


def npz_config(tmp_path, **arrays):
    np.savez(tmp_path / "data.npz", **arrays)
    return write_yaml(tmp_path / "c.yaml", {"data": {"source": "npz", "path": str(tmp_path / "data.npz")}})


def test_negative_counts(tmp_path, capsys):
    y = np.ones((6, 20, 2))
    y[1, 3, 0] = -1
    config = npz_config(tmp_path, y=y, dt=0.01)
    error = run_fit_expecting_error(capsys, config, "--out", tmp_path / "run")
    assert "negative" in error
    assert "data.npz" in error


def test_fractional_counts(tmp_path, capsys):
    config = npz_config(tmp_path, y=np.full((6, 20, 2), 0.5), dt=0.01)
    error = run_fit_expecting_error(capsys, config, "--out", tmp_path / "run")
    assert "integer" in error


def test_nan_in_observations(tmp_path, capsys):
    y = np.ones((6, 20, 2))
    y[0, 0, 0] = np.nan
    config = npz_config(tmp_path, y=y, dt=0.01)
    error = run_fit_expecting_error(capsys, config, "--out", tmp_path / "run")
    assert "NaN" in error


def test_unsorted_times(tmp_path, capsys):
    config = npz_config(tmp_path, y=np.ones((6, 4, 2)), ts=np.array([0.0, 0.02, 0.01, 0.03]))
    error = run_fit_expecting_error(capsys, config, "--out", tmp_path / "run")
    assert "ts" in error


def test_mismatched_trials_in_inputs(tmp_path, capsys):
    config = npz_config(tmp_path, y=np.ones((6, 20, 2)), u=np.zeros((5, 20, 1)), dt=0.01)
    error = run_fit_expecting_error(capsys, config, "--out", tmp_path / "run")
    assert "u" in error
    assert "6" in error


def test_corrupt_npz(tmp_path, capsys):
    (tmp_path / "data.npz").write_bytes(b"PK\x03\x04 truncated")
    config = write_yaml(tmp_path / "c.yaml", {"data": {"source": "npz", "path": str(tmp_path / "data.npz")}})
    error = run_fit_expecting_error(capsys, config, "--out", tmp_path / "run")
    assert "data.npz" in error


def test_models_lists_constants(capsys):
    assert main(["models"]) == 0
    output = capsys.readouterr().out
    assert "fitzhugh_nagumo (FitzHughNagumo), states: 2" in output
    assert "tau" in output


# The progress checks fit the module fixture's config for as many steps, so they read its compiled programs
# from the session's compilation cache. A fit of another model and recording compiled for about 20 s.
def test_quiet_fit_prints_no_progress_messages(fitted_run, tmp_path, capsys):
    config = fitted_run.parent / "tiny.yaml"
    main(["fit", str(config), "--out", str(tmp_path / "run"), "--steps", "2", "--quiet"])
    assert "INFO" not in capsys.readouterr().err
    assert "fitting" in (tmp_path / "run" / "log.txt").read_text()


def test_fit_without_quiet_reports_progress(fitted_run, tmp_path, capsys):
    config = fitted_run.parent / "tiny.yaml"
    main(["fit", str(config), "--out", str(tmp_path / "run"), "--steps", "2"])
    assert "INFO: fitting" in capsys.readouterr().err


def test_interrupt_before_command_exits_130(monkeypatch, capsys):
    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run_command", interrupted)
    assert main(["models"]) == 130
    assert capsys.readouterr().err == "neuroude: interrupted\n"


def test_interrupt_during_extension_import_exits_130(monkeypatch, capsys):
    # A fresh `neuroude` process starts with Python's default SIGINT handler. Earlier tests in this
    # process (Ray, subprocess helpers) may have replaced it, so put it back for this test.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)

    def import_interrupted(argv):
        # jaxlib turns Ctrl-C during its initialisation into an ImportError without the interrupt in its chain.
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            pass
        raise ImportError("Encountered an error while initializing the extension.")

    monkeypatch.setattr(cli, "_run_command", import_interrupted)
    try:
        exit_code = main(["models"])
        handler_after = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)

    assert exit_code == 130
    assert capsys.readouterr().err == "neuroude: interrupted\n"
    assert handler_after is signal.default_int_handler


def test_import_error_without_interrupt_raises(monkeypatch):
    def broken_import(argv):
        raise ImportError("no module named 'missing'")

    monkeypatch.setattr(cli, "_run_command", broken_import)
    with pytest.raises(ImportError, match="missing"):
        main(["models"])


def test_progress_bar_off_when_stderr_not_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    monkeypatch.delenv("TTY_INTERACTIVE", raising=False)
    with FitProgress(10) as progress:
        progress.update(1, {"loss": 1.0, "log_likelihood": -1.0, "kl_initial": 0.0, "kl_path": 0.0, "beta": 1.0},
                        None, 0.0, 0)
    assert progress._progress.disable
    assert sys.stderr.getvalue() == ""

def test_interrupted_fit_hint_follows_checkpoint(tmp_path, monkeypatch, capsys):
    import neuroude.workflow

    def interrupted_fit(config, out, *args):
        raise KeyboardInterrupt

    monkeypatch.setattr(neuroude.workflow, "fit_run", interrupted_fit)
    out = tmp_path / "early"
    assert main(["fit", "--out", str(out), "--quiet"]) == 130
    assert "no checkpoint was saved, so start the fit again without --resume" in capsys.readouterr().err

    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.eqx").write_bytes(b"neuroude-checkpoint 2\n")
    assert main(["fit", "--out", str(out), "--quiet"]) == 130
    assert "interrupted; continue the fit with --resume" in capsys.readouterr().err


@pytest.mark.parametrize("typo", ["--stesp", "--step"])
def test_unknown_fit_option_suggests_steps(typo, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["fit", typo, "30"])
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert err.startswith("usage: neuroude fit ")
    assert f"unrecognized arguments: {typo}; did you mean --steps" in err
