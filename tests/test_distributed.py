"""Multi-host fits: training.distributed is validated, passed to jax.distributed.initialize, and two
processes on this machine fit as one over the devices of both."""

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from conftest import tiny_config
from neuroude.distributed import initialize_distributed
from neuroude.errors import ConfigError, TrainingError
from neuroude.workflow import fit_run

EXPLICIT = {"coordinator_address": "127.0.0.1:29500", "num_processes": 2, "process_id": 1}


def test_distributed_default_off():
    assert tiny_config().training.distributed is None


def test_distributed_partial_rejected():
    with pytest.raises(ConfigError, match=r"sets \['coordinator_address'\] but not \['num_processes', 'process_id'\]"):
        tiny_config(training={"distributed": {"coordinator_address": "10.0.0.1:1234"}})


def test_distributed_bad_address_rejected():
    with pytest.raises(ConfigError, match="coordinator_address is '10.0.0.1'; expected host:port"):
        tiny_config(training={"distributed": {**EXPLICIT, "coordinator_address": "10.0.0.1"}})


def test_distributed_process_id_range():
    with pytest.raises(ConfigError, match="process_id is 2; expected 0 to 1 for num_processes 2"):
        tiny_config(training={"distributed": {**EXPLICIT, "process_id": 2}})


def test_distributed_unknown_key_rejected():
    with pytest.raises(ConfigError, match="unknown config key 'training.distributed.coordinator'"):
        tiny_config(training={"distributed": {"coordinator": "10.0.0.1:1234"}})


@pytest.fixture
def fake_initialize(monkeypatch):
    """Record calls of jax.distributed.initialize instead of connecting anywhere."""
    calls = []

    def initialize(**arguments):
        calls.append(arguments)

    monkeypatch.setattr(jax.distributed, "initialize", initialize)
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: bool(calls))
    return calls


def test_initialize_gets_configured_values(fake_initialize):
    training = tiny_config(training={"distributed": {**EXPLICIT, "local_device_ids": [0],
                                                     "initialization_timeout": 30}}).training
    assert initialize_distributed(training)
    assert fake_initialize == [{**EXPLICIT, "local_device_ids": [0], "initialization_timeout": 30}]


def test_initialize_auto_detects(fake_initialize):
    assert initialize_distributed(tiny_config(training={"distributed": {}}).training)
    assert fake_initialize == [{"coordinator_address": None, "num_processes": None, "process_id": None,
                                "local_device_ids": None, "initialization_timeout": 300}]


def test_initialize_skipped_without_setting(fake_initialize):
    assert not initialize_distributed(tiny_config().training)
    assert fake_initialize == []


def test_initialize_failure_explained(monkeypatch):
    def reject_late_call(**arguments):
        raise RuntimeError("jax.distributed.initialize() must be called before any JAX computations are executed.")

    monkeypatch.setattr(jax.distributed, "initialize", reject_late_call)
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    with pytest.raises(TrainingError, match="must run before any JAX computation"):
        initialize_distributed(tiny_config(training={"distributed": EXPLICIT}).training)


def test_fit_run_initializes_before_data(fake_initialize, monkeypatch, tmp_path):
    # Loading data and building the model run JAX computations, after which initialize would fail.
    calls_when_loading = []

    def load_data(config):
        calls_when_loading.append(len(fake_initialize))
        raise KeyboardInterrupt

    monkeypatch.setattr("neuroude.workflow.load_data", load_data)
    config = tiny_config(training={"distributed": {**EXPLICIT, "process_id": 0}})
    with pytest.raises(KeyboardInterrupt):
        fit_run(config, tmp_path / "run", quiet=True)
    assert calls_when_loading == [1]
    assert fake_initialize == [{**EXPLICIT, "process_id": 0, "local_device_ids": None, "initialization_timeout": 300}]


PROCESS_SCRIPT = r"""
import json
import logging
import sys

sys.path.insert(0, sys.argv[1])
import jax
from conftest import tiny_config, tiny_recording
from neuroude.build import build_model
from neuroude.distributed import initialize_distributed
from neuroude.runs import RunFolder
from neuroude.train import fit

folder, port, process_id = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
distributed = {"coordinator_address": f"127.0.0.1:{port}", "num_processes": 2, "process_id": process_id,
               "initialization_timeout": 120}
config = tiny_config(training={"steps": 2, "batch_size": 4, "distributed": distributed})

# The training loop alone, without the final evaluation and figures of fit_run, keeps compilation short.
initialize_distributed(config.training)
recording = tiny_recording()
model = build_model(config, recording.n_channels, recording.n_inputs, jax.random.PRNGKey(0), 0.5)
run = RunFolder(f"{folder}/run-{process_id}")
run.prepare(resume=False, overwrite=False)
handler = logging.FileHandler(run.log)
logging.getLogger("neuroude").addHandler(handler)
logging.getLogger("neuroude").setLevel(logging.INFO)
result = fit(model, recording, config, {"train": list(range(6)), "validation": [6, 7], "test": [8, 9]}, run, quiet=True)
handler.close()
output = {"process_index": jax.process_index(), "device_count": jax.device_count(),
          "local_device_count": jax.local_device_count(), "steps_run": result.state.step}
jax.distributed.shutdown()
print(json.dumps(output))
"""


def free_local_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """Fit the tiny recording with two CPU processes on this machine, one device each; return their results."""
    folder = tmp_path_factory.mktemp("distributed")
    environment = dict(os.environ, JAX_PLATFORMS="cpu")
    environment.pop("XLA_FLAGS", None)
    port = free_local_port()
    tests_folder = str(Path(__file__).resolve().parent)
    processes = [
        subprocess.Popen([sys.executable, "-c", PROCESS_SCRIPT, tests_folder, str(folder), str(port), str(index)],
                         env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for index in range(2)
    ]
    outputs = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=240)
            assert process.returncode == 0, stderr[-4000:]
            outputs.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return folder, outputs


def test_two_processes_share_devices(two_processes):
    _, outputs = two_processes
    assert [output["process_index"] for output in outputs] == [0, 1]
    for output in outputs:
        assert output["device_count"] == 2
        assert output["local_device_count"] == 1
        assert output["steps_run"] == 2


def test_two_processes_fit_data_parallel(two_processes):
    folder, _ = two_processes
    for index in range(2):
        log = (folder / f"run-{index}" / "log.txt").read_text()
        assert "data parallel over 2 devices, 2 trials per device per step" in log


def test_two_processes_same_losses(two_processes):
    # Both processes hold the replicated parameters, so their loss histories agree exactly.
    folder, _ = two_processes
    histories = []
    for index in range(2):
        with open(folder / f"run-{index}" / "history.csv", newline="") as stream:
            histories.append([float(row["loss"]) for row in csv.DictReader(stream)])
    assert len(histories[0]) == 2
    assert histories[0] == histories[1]
