"""Data-parallel fitting: a minibatch sharded over 4 devices gives the 1-device loss and gradients.

The parent pytest process has already initialised JAX with one CPU device, so
the 4-device checks run in a child process that sets
`--xla_force_host_platform_device_count=4` before importing JAX.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_config
from neuroude.config import TrainingConfig
from neuroude.errors import ConfigError

# float32 tolerance for the same sums reduced in a different order across devices.
RTOL = 1e-5
ATOL = 1e-6

CHILD_SCRIPT = r"""
import json
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, sys.argv[1])
from conftest import tiny_config, tiny_recording
from neuroude.build import build_model
from neuroude.data import save_npz
from neuroude.dynamics import trainable_filter
from neuroude.errors import ConfigError
from neuroude.train import DataParallel, make_optimizer, make_train_step, select_devices
from neuroude.workflow import fit_run

folder = sys.argv[2]
result = {"device_count": len(jax.local_devices())}

config = tiny_config(training={"batch_size": 8})
recording = tiny_recording(n_trials=8)
model = build_model(config, recording.n_channels, recording.n_inputs, jax.random.PRNGKey(0), 0.5)
params, static = eqx.partition(model, trainable_filter(model))
y = jnp.asarray(recording.y, jnp.float32)
stimulus = jnp.asarray(recording.u, jnp.float32)
mask = jnp.ones_like(y)
key = jax.random.PRNGKey(1)
beta = jnp.float32(0.5)


@eqx.filter_jit
def loss_and_gradient(trainable, y, stimulus, mask):
    def loss_fn(trainable):
        return eqx.combine(trainable, static).loss(y, stimulus, mask, 0.0, 0.01, key, beta, 2)[0]

    return eqx.filter_value_and_grad(loss_fn)(trainable)


def as_lists(tree):
    return [np.asarray(leaf, np.float64).ravel().tolist() for leaf in jax.tree_util.tree_leaves(tree)]


data_parallel = DataParallel.over(jax.local_devices())
sharded_batch = jax.device_put((y, stimulus, mask), data_parallel.batch)
replicated_params = jax.device_put(params, data_parallel.replicated)

loss_1, gradient_1 = loss_and_gradient(params, y, stimulus, mask)
loss_4, gradient_4 = loss_and_gradient(replicated_params, *sharded_batch)
result["batch_devices"] = len(sharded_batch[0].sharding.device_set)
result["loss_1"], result["loss_4"] = float(loss_1), float(loss_4)
result["gradient_1"], result["gradient_4"] = as_lists(gradient_1), as_lists(gradient_4)

# Whole training steps (clipping, AdamW, non-finite guard) on each placement. The learning rate is 0 at
# the first step of the warm-up, so the parameters are compared after the second step.
optimizer = make_optimizer(config.training)
train_step = make_train_step(static, optimizer, 0.0, 0.01, 2)
stepped_1, state_1 = params, optimizer.init(params)
stepped_4, state_4 = replicated_params, jax.device_put(optimizer.init(params), data_parallel.replicated)
for _ in range(2):
    stepped_1, state_1 = train_step(stepped_1, state_1, y, stimulus, mask, key, beta)[:2]
    stepped_4, state_4 = train_step(stepped_4, state_4, *sharded_batch, key, beta)[:2]
result["initial"] = as_lists(params)
result["stepped_1"], result["stepped_4"] = as_lists(stepped_1), as_lists(stepped_4)
result["stepped_4_replicated"] = all(
    leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 4
    for leaf in jax.tree_util.tree_leaves(stepped_4)
)

result["two_of_four"] = len(select_devices(tiny_config(training={"devices": 2}).training))

npz = folder + "/tiny.npz"
save_npz(tiny_recording(), npz)
run = fit_run(tiny_config(data={"source": "npz", "path": npz}, training={"steps": 2, "batch_size": 8}),
              folder + "/run", quiet=True)
fitted, _ = eqx.partition(run.model, trainable_filter(run.model))
result["fit_steps"] = run.metrics["training"]["steps_run"]
result["fit_log"] = run.folder.log.read_text()
result["fit_finite"] = all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree_util.tree_leaves(fitted))

for name, training in {"batch_6": {"steps": 2, "batch_size": 6}, "devices_5": {"steps": 2, "devices": 5}}.items():
    try:
        fit_run(tiny_config(data={"source": "npz", "path": npz}, training=training), folder + "/" + name, quiet=True)
        result[name] = None
    except ConfigError as error:
        result[name] = str(error)

print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    """Run the child script on 4 forced CPU devices and return its JSON result."""
    folder = tmp_path_factory.mktemp("sharding")
    environment = dict(os.environ)
    environment["XLA_FLAGS"] = (environment.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    environment["JAX_PLATFORMS"] = "cpu"
    tests_folder = str(Path(__file__).resolve().parent)
    completed = subprocess.run(
        [sys.executable, "-c", CHILD_SCRIPT, tests_folder, str(folder)],
        env=environment, capture_output=True, text=True, timeout=180,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_child_sees_four_devices(four_devices):
    assert four_devices["device_count"] == 4
    assert four_devices["batch_devices"] == 4


def test_sharded_loss_matches_one_device(four_devices):
    np.testing.assert_allclose(four_devices["loss_4"], four_devices["loss_1"], rtol=RTOL, atol=ATOL)


def test_sharded_gradients_match_one_device(four_devices):
    gradient_1, gradient_4 = four_devices["gradient_1"], four_devices["gradient_4"]
    assert len(gradient_4) == len(gradient_1)
    assert any(np.any(np.asarray(leaf) != 0) for leaf in gradient_1)
    for index, (leaf_1, leaf_4) in enumerate(zip(gradient_1, gradient_4)):
        np.testing.assert_allclose(leaf_4, leaf_1, rtol=RTOL, atol=ATOL, err_msg=f"gradient leaf {index}")


def test_sharded_train_step_matches_one_device(four_devices):
    assert four_devices["stepped_4_replicated"]
    changed = [np.any(np.asarray(before) != np.asarray(after))
               for before, after in zip(four_devices["initial"], four_devices["stepped_1"])]
    assert any(changed)
    for index, (leaf_1, leaf_4) in enumerate(zip(four_devices["stepped_1"], four_devices["stepped_4"])):
        np.testing.assert_allclose(leaf_4, leaf_1, rtol=RTOL, atol=ATOL, err_msg=f"parameter leaf {index}")


def test_fit_on_four_devices_finite(four_devices):
    assert four_devices["fit_steps"] == 2
    assert "data parallel over 4 devices, 2 trials per device per step" in four_devices["fit_log"]
    assert four_devices["fit_finite"]


def test_devices_setting_selects_first(four_devices):
    assert four_devices["two_of_four"] == 2


def test_batch_not_divisible_rejected(four_devices):
    message = four_devices["batch_6"]
    assert message is not None
    assert "training.batch_size is 6" in message
    assert "4 devices" in message
    assert "4 or 8" in message


def test_too_many_devices_rejected(four_devices):
    message = four_devices["devices_5"]
    assert message is not None
    assert "training.devices is 5" in message
    assert "only 4 local devices" in message


def test_devices_below_one_rejected():
    with pytest.raises(ConfigError, match="training.devices"):
        tiny_config(training={"devices": 0})


def test_devices_default_uses_all():
    assert TrainingConfig().devices is None
