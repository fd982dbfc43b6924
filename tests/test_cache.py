"""The persistent compilation cache that the `neuroude` command turns on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from neuroude.cache import CACHE_VARIABLE, default_cache_dir

TINY = {
    "model": {"latent_size": 2, "drift_width": 8, "drift_depth": 1, "encoder_size": 2, "recognition_hidden": 8,
              "context_size": 4, "correction_width": 8},
    "training": {"batch_size": 4, "eval_every": 2},
    "evaluation": {"n_samples": 4, "glm_lags": 5},
}


def test_cache_dir_from_variable(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_VARIABLE, str(tmp_path / "jax"))
    assert default_cache_dir() == tmp_path / "jax"


@pytest.mark.parametrize("value", ["", "0", "off", "OFF", "false", "no"])
def test_cache_turned_off_by_variable(monkeypatch, value):
    monkeypatch.setenv(CACHE_VARIABLE, value)
    assert default_cache_dir() is None


def test_cache_dir_defaults_to_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv(CACHE_VARIABLE, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "neuroude" / "jax"


def run_fit(config: Path, out: Path, cache: Path) -> None:
    environment = {**os.environ, CACHE_VARIABLE: str(cache), "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, "-m", "neuroude.cli", "fit", str(config), "--out", str(out), "--steps", "2", "--quiet"]
    completed = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-4000:]


def train_step_entries(cache: Path) -> list[str]:
    return sorted(path.name for path in cache.rglob("*train_step*") if path.is_file())


@pytest.mark.slow
def test_second_fit_reads_cache(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    cache = tmp_path / "cache"

    run_fit(config, tmp_path / "first", cache)
    entries = train_step_entries(cache)
    assert entries, "the first fit wrote no training step to the compilation cache"

    # The second fit finds its training step in the cache, so it writes no new entry for it. Small programs
    # whose compile time straddles the cache's threshold may differ between runs, so only the step is checked.
    run_fit(config, tmp_path / "second", cache)
    assert train_step_entries(cache) == entries
