"""`neuroude fit` killed with SIGKILL at seeded points, then resumed, ends where an uninterrupted fit ends.

The comparison is bitwise. Each step's minibatch and noise are derived from
the seed and the step number alone. A checkpoint stores the parameters and
optimiser state as raw bytes, and its header stores the step, the counters and
the learning-rate scale. Both fits run the same XLA program on one device, so
the resumed fit performs exactly the same floating-point operations.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import numpy as np
import pytest
import yaml

from conftest import tiny_recording
from neuroude.config import load_config
from neuroude.data import save_npz
from neuroude.dynamics import trainable_filter
from neuroude.runs import RunFolder, load_checkpoint
from neuroude.train import make_optimizer
from neuroude.workflow import _model_for, _split, fit_run

SOURCE = Path(__file__).resolve().parents[1] / "src"
STEPS = 24
SEED = 20261204
PROCESS_DEADLINE_S = 600

TINY = {
    "model": {"latent_size": 2, "drift_width": 8, "drift_depth": 1, "encoder_size": 2, "recognition_hidden": 8,
              "context_size": 4, "correction_width": 8, "n_init_bins": 3},
    "solver": {"n_substeps": 1},
    "training": {"steps": STEPS, "batch_size": 4, "eval_every": 6, "checkpoint_every": 1, "warmup_steps": 1,
                 "kl_warmup_steps": 4, "devices": 1},
    "evaluation": {"n_samples": 2, "skip_bins": 3, "glm_lags": 3},
}


def start_fit(config_path: Path, out: Path, resume: bool) -> subprocess.Popen:
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOURCE), environment.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "neuroude.cli", "fit", str(config_path), "--out", str(out), "--quiet"]
    if resume:
        command.append("--resume")
    return subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def checkpoint_step(path: Path) -> int:
    """Return the step in a checkpoint's header, or -1 while none has been written."""
    try:
        with open(path, "rb") as stream:
            stream.readline()
            return int(json.loads(stream.readline())["step"])
    except (FileNotFoundError, ValueError, KeyError):
        return -1


def kill_after_step(process: subprocess.Popen, last: Path, target: int, delay_s: float) -> int:
    """SIGKILL `process` `delay_s` seconds after its last checkpoint reaches `target`; return the step it had saved."""
    deadline = time.monotonic() + PROCESS_DEADLINE_S
    while checkpoint_step(last) < target:
        if process.poll() is not None:
            pytest.fail(f"the fit exited with {process.returncode} before step {target}: {process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the fit did not reach step {target} in {PROCESS_DEADLINE_S} s")
        time.sleep(0.005)
    time.sleep(delay_s)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return checkpoint_step(last)


def payload(path: Path) -> bytes:
    """Return a checkpoint's array bytes, without its header (which holds wall-clock time)."""
    with open(path, "rb") as stream:
        stream.readline()
        stream.readline()
        return stream.read()


@pytest.mark.slow
def test_killed_fit_resumes_to_same_parameters(tmp_path):
    save_npz(tiny_recording(), tmp_path / "tiny.npz")
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump({**TINY, "data": {"source": "npz", "path": "tiny.npz"}}))
    config = load_config(config_path)

    recording = tiny_recording()
    model = _model_for(recording, config, _split(recording, config))
    params, _ = eqx.partition(model, trainable_filter(model))
    like = (params, make_optimizer(config.training).init(params))

    rng = np.random.default_rng(SEED)
    targets = sorted(rng.choice(np.arange(2, STEPS - 10), size=2, replace=False).tolist())
    delays = rng.uniform(0.0, 0.02, size=len(targets)).tolist()
    run = RunFolder(tmp_path / "killed")

    saved_steps = []
    for index, (target, delay) in enumerate(zip(targets, delays)):
        process = start_fit(config_path, run.root, resume=index > 0)
        saved_steps.append(kill_after_step(process, run.last_checkpoint, target, delay))
        assert process.returncode == -signal.SIGKILL
        # Every checkpoint present is whole: its digest matches and its arrays load.
        for checkpoint in (run.last_checkpoint, run.best_checkpoint):
            if checkpoint.exists():
                header, _ = load_checkpoint(checkpoint, like)
                assert header["step"] <= STEPS

    assert saved_steps[0] < STEPS
    assert saved_steps[-1] < STEPS
    finished = start_fit(config_path, run.root, resume=True)
    _, stderr = finished.communicate(timeout=PROCESS_DEADLINE_S)
    assert finished.returncode == 0, stderr.decode()
    assert not list(run.checkpoints.glob(".*.tmp"))

    reference = fit_run(config, tmp_path / "whole", quiet=True)
    assert reference.metrics["training"]["steps_run"] == STEPS
    assert payload(run.last_checkpoint) == payload(RunFolder(tmp_path / "whole").last_checkpoint)
    resumed_header, (resumed_params, _) = load_checkpoint(run.last_checkpoint, like)
    assert resumed_header["step"] == STEPS
    for leaf in jax.tree_util.tree_leaves(resumed_params):
        assert np.all(np.isfinite(np.asarray(leaf)))
