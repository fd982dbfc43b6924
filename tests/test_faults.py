"""Faults during a fit: damaged checkpoints, full or read-only disks, NaN storms and solver blow-ups."""

import errno
import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import neuroude.runs as runs_module
from conftest import tiny_config, tiny_recording
from neuroude.config import TrainingConfig
from neuroude.data import save_npz
from neuroude.diagnose import locate_nonfinite
from neuroude.dynamics import trainable_filter
from neuroude.errors import DataFileError, RunFolderError
from neuroude.progress import FitProgress
from neuroude.runs import RunFolder, load_checkpoint, save_checkpoint, write_text
from neuroude.train import FitState, _count_nonfinite, make_optimizer, make_train_step
from neuroude.workflow import fit_run

RUNNING_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def npz_config(tmp_path, **sections):
    path = tmp_path / "tiny.npz"
    if not path.exists():
        save_npz(tiny_recording(), path)
    return tiny_config(data={"source": "npz", "path": str(path)}, **sections)


def batch(recording):
    y = jnp.asarray(recording.y)
    return y, jnp.asarray(recording.u), jnp.ones_like(y)


@pytest.fixture(scope="module")
def checkpoint_tree():
    model = tiny_model()
    params, _ = eqx.partition(model, trainable_filter(model))
    return params


def tiny_model(seed=0):
    from neuroude.build import build_model

    return build_model(tiny_config(), 3, 1, jax.random.PRNGKey(seed), 0.5)


# -- checksums -----------------------------------------------------------------


def test_checkpoint_stores_sha256(tmp_path, checkpoint_tree):
    path = tmp_path / "last.eqx"
    save_checkpoint(path, {"step": 3}, checkpoint_tree)
    header, _ = load_checkpoint(path, checkpoint_tree)
    assert header == {"step": 3}
    assert b'"sha256": "' in path.read_bytes().splitlines()[1]


@pytest.mark.parametrize("where", ["header", "arrays", "last byte"])
def test_altered_checkpoint_byte_rejected(tmp_path, checkpoint_tree, where):
    path = tmp_path / "last.eqx"
    save_checkpoint(path, {"step": 3, "best_metric": 0.25}, checkpoint_tree)
    data = bytearray(path.read_bytes())
    header_end = data.index(b"\n", data.index(b"\n") + 1)
    position = {"header": data.index(b"0.25") + 2, "arrays": header_end + 40, "last byte": len(data) - 1}[where]
    # Change a digit into another digit, or flip one bit, so the file keeps its layout.
    data[position] = ord("7") if where == "header" else data[position] ^ 0x01
    path.write_bytes(bytes(data))

    with pytest.raises(DataFileError) as raised:
        load_checkpoint(path, checkpoint_tree)
    message = str(raised.value)
    assert str(path) in message
    assert "SHA-256 digest" in message
    assert "corrupt" in message


def test_checkpoint_without_digest_rejected(tmp_path, checkpoint_tree):
    path = tmp_path / "last.eqx"
    save_checkpoint(path, {"step": 3}, checkpoint_tree)
    lines = path.read_bytes().split(b"\n", 2)
    lines[1] = b'{"step": 3}'
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(DataFileError, match="has no sha256 digest"):
        load_checkpoint(path, checkpoint_tree)


# -- full and read-only disks --------------------------------------------------


def fail_fsync_when(condition):
    real_fsync = os.fsync

    def fsync(descriptor):
        if condition():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(descriptor)

    return fsync


def test_full_disk_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    write_text(path, "old")
    monkeypatch.setattr(runs_module.os, "fsync", fail_fsync_when(lambda: True))
    with pytest.raises(RunFolderError) as raised:
        write_text(path, "new")
    message = str(raised.value)
    assert str(path) in message
    assert "the disk is full" in message
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_full_disk_stops_fit_with_last_checkpoint(tmp_path, monkeypatch):
    config = npz_config(tmp_path, training={"steps": 6, "eval_every": 3, "checkpoint_every": 2})
    disk_full = {"now": False}
    original_update = FitProgress.update

    def fill_disk_after_step_2(self, step, *args):
        original_update(self, step, *args)
        if step == 2:
            disk_full["now"] = True

    monkeypatch.setattr(FitProgress, "update", fill_disk_after_step_2)
    monkeypatch.setattr(runs_module.os, "fsync", fail_fsync_when(lambda: disk_full["now"]))
    with pytest.raises(RunFolderError) as raised:
        fit_run(config, tmp_path / "run", quiet=True)
    monkeypatch.undo()

    run = RunFolder(tmp_path / "run")
    message = str(raised.value)
    # The evaluation at step 3 is the first write after the disk filled up.
    assert str(run.best_checkpoint) in message
    assert "the disk is full" in message
    model = tiny_model()
    params, _ = eqx.partition(model, trainable_filter(model))
    opt_state = make_optimizer(config.training).init(params)
    header, _ = load_checkpoint(run.last_checkpoint, (params, opt_state))
    assert header["step"] == 2
    assert not list(run.checkpoints.glob(".*.tmp"))


def test_unwritable_folder_mapped_to_run_folder_error(tmp_path, monkeypatch):
    # Simulated, because root may write into a folder whatever its mode bits are.
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(runs_module.tempfile, "mkstemp", denied)
    with pytest.raises(RunFolderError) as raised:
        RunFolder(tmp_path / "run").prepare(resume=False, overwrite=False)
    message = str(raised.value)
    assert str(tmp_path / "run") in message
    assert "permission denied" in message


@pytest.mark.skipif(RUNNING_AS_ROOT, reason="root ignores folder permissions, so chmod cannot make a folder read-only")
def test_read_only_output_folder_rejected_before_fit(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(RunFolderError) as raised:
            fit_run(npz_config(tmp_path), folder, quiet=True)
    finally:
        folder.chmod(0o755)
    assert str(folder) in str(raised.value)
    assert "permission denied" in str(raised.value)


def test_resume_removes_stale_temporaries(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.prepare(resume=False, overwrite=False)
    write_text(run.config, "seed: 0\n")
    write_text(run.last_checkpoint, "stand-in")
    stale = run.checkpoints / ".last.eqx.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    run.prepare(resume=True, overwrite=False)
    assert not stale.exists()
    assert run.last_checkpoint.read_text() == "stand-in"


# -- NaN storms and solver blow-ups -------------------------------------------


def test_nonfinite_step_lowers_learning_rate():
    training = TrainingConfig(nonfinite_lr_factor=0.25, max_nonfinite=3)
    state = FitState()
    assert _count_nonfinite(state, False, training) is False
    assert _count_nonfinite(state, False, training) is False
    assert state.lr_scale == pytest.approx(0.0625)
    assert _count_nonfinite(state, True, training) is False
    assert state.nonfinite_in_a_row == 0
    assert state.lr_scale == pytest.approx(0.0625)
    assert _count_nonfinite(state, False, training) is False
    assert _count_nonfinite(state, False, training) is False
    assert _count_nonfinite(state, False, training) is True
    assert state.nonfinite_total == 5


@pytest.fixture(scope="module")
def step_setup():
    model = tiny_model()
    params, static = eqx.partition(model, trainable_filter(model))
    optimizer = make_optimizer(TrainingConfig(warmup_steps=0, lr_schedule="constant"))
    steps = {
        "generous": make_train_step(static, optimizer, 0.0, 0.01, 1, max_state=1e6),
        "bounded": make_train_step(static, optimizer, 0.0, 0.01, 1, max_state=1e-3),
    }
    args = (*batch(tiny_recording()), jax.random.PRNGKey(0), jnp.float32(1.0))
    return params, optimizer.init(params), steps, args


def test_lr_scale_scales_update(step_setup):
    params, opt_state, steps, args = step_setup
    full, *_ = steps["generous"](params, opt_state, *args, lr_scale=jnp.float32(1.0))
    half, *_ = steps["generous"](params, opt_state, *args, lr_scale=jnp.float32(0.5))
    for before, after_full, after_half in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(full),
                                              jax.tree_util.tree_leaves(half)):
        np.testing.assert_allclose(np.asarray(after_half - before), 0.5 * np.asarray(after_full - before),
                                   rtol=1e-4, atol=1e-9)


def test_state_bound_skips_step_and_names_bin(step_setup):
    params, opt_state, steps, args = step_setup
    new_params, _, terms, finite, _ = steps["bounded"](params, opt_state, *args, lr_scale=jnp.float32(1.0))
    assert bool(terms["state_bound_exceeded"])
    assert not bool(finite)
    # Every sampled initial state exceeds 1e-3, so the first trial's first bin is reported.
    assert int(terms["bound_trial"]) == 0
    assert int(terms["bound_bin"]) == 0
    for before, after in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(new_params)):
        np.testing.assert_array_equal(np.asarray(before), np.asarray(after))

    _, _, terms, finite, _ = steps["generous"](params, opt_state, *args, lr_scale=jnp.float32(1.0))
    assert not bool(terms["state_bound_exceeded"])
    assert bool(finite)


def poison(tree, path):
    return eqx.tree_at(path, tree, replace_fn=lambda leaf: leaf.at[..., 0].set(jnp.nan))


@pytest.mark.parametrize(
    "case, module, trial, time",
    [
        ("stimulus", "stimulus encoder", 1, 0.04),
        ("y", "recognition model", 2, None),
        ("bound", "process model", 0, 0.0),
        ("observation parameters", "observation model", None, None),
    ],
)
def test_diagnosis_names_first_module(case, module, trial, time):
    model = tiny_model()
    y, stimulus, mask = batch(tiny_recording(n_trials=4))
    max_state = np.inf
    if case == "stimulus":
        stimulus = stimulus.at[1, 4, 0].set(jnp.nan)
    elif case == "y":
        y = y.at[2, 5, 1].set(jnp.nan)
    elif case == "bound":
        max_state = 1e-3
    else:
        model = poison(model, lambda m: jax.tree_util.tree_leaves(m.observation)[0])

    diagnosis = locate_nonfinite(model, y, stimulus, mask, 0.0, 0.01, jax.random.PRNGKey(0), 1, max_state)
    assert diagnosis.module == module
    assert diagnosis.trial == trial
    if time is None:
        assert diagnosis.time is None or case == "y"
    else:
        assert diagnosis.time == pytest.approx(time)


def test_diagnosis_of_finite_forward_blames_gradient():
    model = tiny_model()
    diagnosis = locate_nonfinite(model, *batch(tiny_recording(n_trials=2)), 0.0, 0.01, jax.random.PRNGKey(0), 1)
    assert diagnosis.module == "gradient"
