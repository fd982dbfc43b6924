"""Shared fixtures: small models and recordings, so JAX compiles each shape once per session."""

import gc
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest

from neuroude.build import build_model
from neuroude.config import parse_config
from neuroude.data import Recording

ROOT = Path(__file__).resolve().parents[1]

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module", autouse=True)
def release_compiled_programs():
    """Drop JAX's compiled programs after each test module.

    A whole-suite process otherwise keeps every executable it compiled (over 6 GB resident by the end),
    and CI runs crashed in XLA's compiler late in the suite, on tests that pass when run alone.
    Modules share compilation through their own fixtures, so little is compiled twice.
    """
    yield
    jax.clear_caches()
    gc.collect()


# The session keeps its own persistent compilation cache in a temporary folder, for every program however
# quick to compile. jax.clear_caches() above drops the compiled programs after each module. Without this
# folder, each module compiled the same small programs again: building one tiny model draws random arrays
# of 15 shapes, which took 4.4 s of CPU time to compile and takes 0.6 s to read back. Tests and modules
# that fit the same model also read each other's training steps. JAX reads the setting at its first
# compilation, so it is set here, before test modules are collected (some compile while they are imported).
# NOTE: a session that is killed leaves the folder behind in the temporary directory.
COMPILATION_CACHE = Path(tempfile.mkdtemp(prefix="neuroude-tests-jax-cache-"))
jax.config.update("jax_compilation_cache_dir", str(COMPILATION_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
# -1 turns off the size limit, where 0 would let JAX choose one for the file system.
jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)

# Commands, in-process or as `neuroude` child processes, use the session's folder rather than the user's,
# so the killed, resumed and reference fits of test_kill_resume.py compile their programs once, not four times.
os.environ["NEUROUDE_COMPILATION_CACHE"] = str(COMPILATION_CACHE)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(COMPILATION_CACHE, ignore_errors=True)


def load_example(name: str):
    """Import `examples/NAME.py` as a module, so tests call the same code a user runs."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_config(**sections):
    """A RunConfig with small networks and few steps, overridden by `sections`."""
    raw = {
        "model": {
            "latent_size": 2, "drift_width": 8, "drift_depth": 1, "encoder_size": 2, "recognition_hidden": 8,
            "context_size": 4, "correction_width": 8, "n_init_bins": 3,
        },
        "solver": {"n_substeps": 1},
        "training": {"steps": 6, "batch_size": 4, "eval_every": 3, "checkpoint_every": 2, "warmup_steps": 1,
                     "kl_warmup_steps": 4},
        "evaluation": {"n_samples": 4, "skip_bins": 3, "glm_lags": 3},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            raw.setdefault(section, {}).update(values)
        else:
            raw[section] = values
    return parse_config(raw)


def tiny_recording(n_trials=10, n_time=12, n_channels=3, n_inputs=1, seed=0) -> Recording:
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(n_trials, n_time, n_inputs)) if n_inputs else None
    y = rng.poisson(0.5, size=(n_trials, n_time, n_channels))
    return Recording(y=y, ts=np.arange(n_time) * 0.01, u=u, metadata={"source": "test"})


@pytest.fixture
def recording():
    return tiny_recording()


@pytest.fixture
def make_model():
    def make(config=None, recording=None, seed=0):
        config = config or tiny_config()
        recording = recording or tiny_recording()
        return build_model(config, recording.n_channels, recording.n_inputs, jax.random.PRNGKey(seed), 0.5)

    return make
