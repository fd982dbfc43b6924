"""Fitting loop: schedules, checkpoints, exact resumption and the non-finite guard."""

import json
import shutil

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

import neuroude.train as train_module
from conftest import tiny_config, tiny_recording
from neuroude.config import TrainingConfig
from neuroude.data import save_npz
from neuroude.diagnose import Diagnosis
from neuroude.dynamics import trainable_filter
from neuroude.errors import ConfigError, DataFileError, RunFolderError, TrainingError
from neuroude.progress import FitProgress
from neuroude.runs import RunFolder, load_checkpoint, save_checkpoint
from neuroude.train import kl_weight, make_optimizer, make_train_step
from neuroude.workflow import fit_run


def npz_config(tmp_path, **sections):
    path = tmp_path / "tiny.npz"
    if not path.exists():
        save_npz(tiny_recording(), path)
    return tiny_config(data={"source": "npz", "path": str(path)}, **sections)


def test_linear_kl_warmup():
    config = TrainingConfig(kl_schedule="linear", kl_warmup_steps=10)
    assert kl_weight(0, config) == 0.0
    assert kl_weight(5, config) == 0.5
    assert kl_weight(20, config) == 1.0


def test_kl_weight_max_scales_beta():
    config = TrainingConfig(kl_schedule="linear", kl_warmup_steps=10, kl_weight_max=0.3)
    assert kl_weight(0, config) == 0.0
    assert kl_weight(5, config) == pytest.approx(0.15)
    assert kl_weight(20, config) == pytest.approx(0.3)
    assert kl_weight(3, TrainingConfig(kl_schedule="constant", kl_weight_max=0.3)) == pytest.approx(0.3)


@pytest.mark.parametrize("value", [0.0, 1.5])
def test_kl_weight_max_out_of_range(value):
    with pytest.raises(ConfigError, match="training.kl_weight_max"):
        tiny_config(training={"kl_weight_max": value})


def test_cyclical_kl_schedule_repeats():
    config = TrainingConfig(kl_schedule="cyclical", kl_warmup_steps=10)
    assert kl_weight(0, config) == 0.0
    assert kl_weight(2, config) == pytest.approx(0.4)
    assert kl_weight(7, config) == 1.0
    assert kl_weight(12, config) == pytest.approx(0.4)


def test_checkpoint_round_trip_exact(tmp_path, make_model):
    model = make_model()
    params, _ = eqx.partition(model, trainable_filter(model))
    opt_state = make_optimizer(TrainingConfig()).init(params)
    save_checkpoint(tmp_path / "c.eqx", {"step": 7}, (params, opt_state))

    blank = jax.tree_util.tree_map(jnp.zeros_like, (params, opt_state))
    header, (loaded, loaded_state) = load_checkpoint(tmp_path / "c.eqx", blank)
    assert header == {"step": 7}
    for original, restored in zip(jax.tree_util.tree_leaves((params, opt_state)),
                                  jax.tree_util.tree_leaves((loaded, loaded_state))):
        np.testing.assert_array_equal(np.asarray(original), np.asarray(restored))


def test_corrupt_checkpoint_rejected(tmp_path, make_model):
    model = make_model()
    params, _ = eqx.partition(model, trainable_filter(model))
    path = tmp_path / "c.eqx"
    save_checkpoint(path, {"step": 1}, params)
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(DataFileError, match="corrupt"):
        load_checkpoint(path, params)


def test_foreign_file_rejected_as_checkpoint(tmp_path, make_model):
    path = tmp_path / "c.eqx"
    path.write_text("not a checkpoint\n")
    with pytest.raises(DataFileError, match="not a neuroude checkpoint"):
        load_checkpoint(path, make_model())


def test_nonfinite_step_leaves_parameters(make_model, recording):
    model = make_model()
    params, static = eqx.partition(model, trainable_filter(model))
    optimizer = make_optimizer(TrainingConfig())
    opt_state = optimizer.init(params)
    step = make_train_step(static, optimizer, 0.0, 0.01, 1)
    y = jnp.asarray(recording.y).at[0, 0, 0].set(jnp.nan)
    new_params, new_state, terms, finite, _ = step(
        params, opt_state, y, jnp.asarray(recording.u), jnp.ones_like(y), jax.random.PRNGKey(0), jnp.float32(1.0)
    )
    assert not bool(finite)
    for before, after in zip(jax.tree_util.tree_leaves((params, opt_state)),
                             jax.tree_util.tree_leaves((new_params, new_state))):
        np.testing.assert_array_equal(np.asarray(before), np.asarray(after))


def test_frozen_constant_not_updated(recording):
    config = tiny_config(model={"drift": "fitzhugh_nagumo", "frozen_constants": ["a", "tau"]}, solver={"n_substeps": 10})
    from neuroude.build import build_model

    model = build_model(config, 3, 1, jax.random.PRNGKey(0))
    params, static = eqx.partition(model, trainable_filter(model))
    optimizer = make_optimizer(TrainingConfig(warmup_steps=0, weight_decay=0.5))
    opt_state = optimizer.init(params)
    step = make_train_step(static, optimizer, 0.0, 0.01, 1)
    y = jnp.asarray(recording.y)
    for i in range(3):
        params, opt_state, _, finite, _ = step(params, opt_state, y, jnp.asarray(recording.u), jnp.ones_like(y),
                                               jax.random.PRNGKey(i), jnp.float32(1.0))
    trained = eqx.combine(params, static)
    assert float(trained.sde.drift.a.value) == pytest.approx(0.7, rel=1e-6)
    assert float(trained.sde.drift.tau.value) == pytest.approx(12.5, rel=1e-6)
    assert float(trained.sde.drift.b.value) != pytest.approx(0.8, rel=1e-6)


def final_parameters(run_dir):
    """Return the serialised arrays of the last checkpoint, without its header (which holds wall-clock time)."""
    with open(RunFolder(run_dir).last_checkpoint, "rb") as stream:
        stream.readline()
        stream.readline()
        return stream.read()


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory):
    """Return the config and folder of one uninterrupted fit of `npz_config`, shared by the tests that only read it."""
    folder = tmp_path_factory.mktemp("whole_run")
    config = npz_config(folder)
    fit_run(config, folder / "whole", quiet=True)
    return config, folder / "whole"


def test_resumed_fit_matches_uninterrupted(tmp_path, monkeypatch, whole_run):
    config, whole = whole_run

    original_update = FitProgress.update

    def interrupt_at_step_4(self, step, *args):
        original_update(self, step, *args)
        if step == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(FitProgress, "update", interrupt_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        fit_run(config, tmp_path / "split", quiet=True)
    monkeypatch.setattr(FitProgress, "update", original_update)

    resumed = fit_run(config, tmp_path / "split", resume=True, quiet=True)
    assert resumed.metrics["training"]["steps_run"] == 6
    assert final_parameters(whole) == final_parameters(tmp_path / "split")
    whole_history = (whole / "history.csv").read_text().splitlines()
    split_history = (tmp_path / "split" / "history.csv").read_text().splitlines()
    assert [line.split(",")[:3] for line in whole_history] == [line.split(",")[:3] for line in split_history]


def test_interrupt_before_first_step_resumable(tmp_path, monkeypatch, whole_run):
    config, whole = whole_run

    def interrupt_while_compiling(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "make_train_step", interrupt_while_compiling)
    with pytest.raises(KeyboardInterrupt):
        fit_run(config, tmp_path / "early", quiet=True)
    monkeypatch.undo()

    with open(RunFolder(tmp_path / "early").last_checkpoint, "rb") as stream:
        stream.readline()
        assert json.loads(stream.readline())["step"] == 0
    resumed = fit_run(config, tmp_path / "early", resume=True, quiet=True)
    assert resumed.metrics["training"]["steps_run"] == 6
    assert final_parameters(whole) == final_parameters(tmp_path / "early")


def test_folder_without_checkpoint_reused(tmp_path):
    # An interrupt before the fit saved anything leaves config.yaml and log.txt, which hold nothing to lose.
    run = RunFolder(tmp_path / "early")
    run.root.mkdir()
    run.config.write_text("seed: 0\n")
    run.log.write_text("started\n")

    run.prepare(resume=False, overwrite=False)
    assert not run.log.exists()
    assert run.checkpoints.is_dir()


def test_folder_with_metrics_kept(tmp_path):
    # A finished run whose checkpoints were deleted to save space still has results to lose.
    run = RunFolder(tmp_path / "finished")
    run.root.mkdir()
    run.config.write_text("seed: 0\n")
    run.metrics.write_text("{}\n")

    with pytest.raises(RunFolderError, match="--overwrite"):
        run.check_writable(resume=False, overwrite=False)
    assert run.metrics.read_text() == "{}\n"


def test_nonfinite_steps_stop_fit_and_keep_checkpoint(tmp_path, monkeypatch):
    config = npz_config(tmp_path, training={"max_nonfinite": 2, "steps": 10})
    real_make = train_module.make_train_step

    def blow_up_drift_at_step_3(*args, **kwargs):
        real_step = real_make(*args, **kwargs)
        calls = {"count": 0}

        def step(params, opt_state, *rest):
            calls["count"] += 1
            if calls["count"] == 3:
                # Huge drift weights make the latent path explode, as a diverging fit does.
                params = eqx.tree_at(lambda p: p.sde.drift, params,
                                     replace_fn=lambda drift: jax.tree_util.tree_map(lambda w: w * 1e30, drift))
            return real_step(params, opt_state, *rest)

        return step

    monkeypatch.setattr(train_module, "make_train_step", blow_up_drift_at_step_3)
    with pytest.raises(TrainingError, match="2 training steps in a row") as stopped:
        fit_run(config, tmp_path / "run", quiet=True)

    run = RunFolder(tmp_path / "run")
    with open(run.last_checkpoint, "rb") as stream:
        stream.readline()
        header = yaml.safe_load(stream.readline())
    assert header["step"] == 2
    assert header["nonfinite_total"] == 0
    message = str(stopped.value)
    assert "the first non-finite value came from the process model in trial" in message
    assert "at t = 0.01 s" in message
    assert "beyond solver.max_state = 1e+06" in message
    assert "last.eqx, was kept as it was" in message
    assert "raise solver.n_substeps" in message
    # The history keeps the rows after the checkpoint at step 2, the non-finite ones included.
    rows = (run.root / "history.csv").read_text().splitlines()
    last = dict(zip(rows[0].split(","), rows[-1].split(",")))
    assert len(rows) - 1 > 2
    assert last["finite"] == "False"


def test_reversible_heun_stop_message(tmp_path):
    # With reversible Heun the advice names the solver, and a fit that saved nothing reports it.
    config = npz_config(tmp_path, solver={"method": "reversible_heun"})
    state = train_module.FitState(step=3, nonfinite_in_a_row=3)
    diagnosis = Diagnosis("process model", "the latent state is NaN", trial=0, time=0.02)
    run = RunFolder(tmp_path / "run")

    message = train_module._stop_message(state, config, diagnosis, np.array([5]), run)
    assert "No checkpoint was saved before the fit stopped" in message
    assert "kept as it was" not in message
    assert "reversible_heun, which is unstable" in message
    assert "Use solver.method: heun" in message
    assert "raising solver.n_substeps does not help" in message
    assert "in trial 5 at t = 0.02 s" in message

    solver_message = train_module._solver_stop_message(state, config, "step size underflow.", run)
    assert "Use solver.method: heun" in solver_message
    assert "No checkpoint was saved" in solver_message


def test_error_before_checkpoint_keeps_history(tmp_path, monkeypatch):
    config = npz_config(tmp_path, training={"steps": 10, "checkpoint_every": 100, "eval_every": 100})
    real_make = train_module.make_train_step

    def fail_at_step_4(*args, **kwargs):
        real_step = real_make(*args, **kwargs)
        calls = {"count": 0}

        def step(*step_args):
            calls["count"] += 1
            if calls["count"] == 4:
                raise RuntimeError("simulated failure in step 4")
            return real_step(*step_args)

        return step

    monkeypatch.setattr(train_module, "make_train_step", fail_at_step_4)
    with pytest.raises(RuntimeError, match="simulated failure"):
        fit_run(config, tmp_path / "run", quiet=True)

    run = RunFolder(tmp_path / "run")
    rows = (run.root / "history.csv").read_text().splitlines()
    assert not run.last_checkpoint.exists()
    assert rows[0].startswith("step,")
    assert [row.split(",")[0] for row in rows[1:]] == ["1", "2", "3"]


def test_existing_run_not_overwritten(whole_run):
    config, folder = whole_run
    before = final_parameters(folder)
    with pytest.raises(RunFolderError, match="already contains a run"):
        fit_run(config, folder, quiet=True)
    assert final_parameters(folder) == before


def test_resume_without_checkpoint_rejected(tmp_path):
    with pytest.raises(DataFileError, match="cannot resume"):
        fit_run(npz_config(tmp_path), tmp_path / "empty", resume=True, quiet=True)


def test_resume_extends_fit_with_saved_config(tmp_path, caplog, whole_run):
    config, whole = whole_run
    shutil.copytree(whole, tmp_path / "run")
    different = npz_config(tmp_path, model={"latent_size": 3})
    resumed = fit_run(different, tmp_path / "run", resume=True, quiet=True, steps=config.training.steps + 2)
    assert resumed.metrics["training"]["steps_run"] == config.training.steps + 2
    assert resumed.config.model.latent_size == 2
    assert "resuming with the configuration saved" in caplog.text


def test_gaussian_run_scores_r_squared(tmp_path):
    rng = np.random.default_rng(0)
    from neuroude.data import Recording

    traces = Recording(y=rng.normal(size=(10, 12, 3)), ts=np.arange(12) * 0.01, u=rng.normal(size=(10, 12, 1)))
    save_npz(traces, tmp_path / "traces.npz")
    config = tiny_config(data={"source": "npz", "path": str(tmp_path / "traces.npz")},
                         model={"observation": "gaussian"}, training={"steps": 2})
    run = fit_run(config, tmp_path / "run", quiet=True)
    assert np.isfinite(run.metrics["test"]["model"]["r_squared"])
    assert np.isfinite(run.metrics["test"]["training_mean"]["r_squared"])
    assert (tmp_path / "run" / "figures" / "heldout_predictions.png").is_file()
