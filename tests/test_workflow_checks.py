"""Checks that fit_run makes before writing a run folder, and the warning when a resume ignores settings."""

import logging

import pytest

from conftest import tiny_config, tiny_recording
from neuroude.data import save_npz
from neuroude.errors import ConfigError
from neuroude.workflow import _differing_keys, fit_run


@pytest.fixture
def short_npz(tmp_path):
    path = tmp_path / "short.npz"
    save_npz(tiny_recording(n_trials=10, n_time=8), path)
    return path


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"model": {"n_init_bins": 9}, "evaluation": {"skip_bins": 9}}, "model.n_init_bins is 9, but the trials have 8 bins"),
        ({"evaluation": {"skip_bins": 8}}, "evaluation.skip_bins is 8, but the trials have 8 bins"),
    ],
)
def test_short_trials_rejected_before_writing(short_npz, tmp_path, sections, message):
    config = tiny_config(data={"source": "npz", "path": str(short_npz)}, **sections)
    with pytest.raises(ConfigError, match=message):
        fit_run(config, tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def test_differing_keys_are_dotted():
    saved = {"training": {"steps": 10, "batch_size": 4}, "seed": 0}
    given = {"training": {"steps": 400, "batch_size": 4}, "seed": 1}
    assert _differing_keys(saved, given) == ["seed", "training.steps"]


def test_resume_names_ignored_settings(short_npz, tmp_path, caplog):
    config = tiny_config(data={"source": "npz", "path": str(short_npz)}, evaluation={"skip_bins": 3})
    fit_run(config, tmp_path / "run", quiet=True, steps=2)

    changed = tiny_config(data={"source": "npz", "path": str(short_npz)}, evaluation={"skip_bins": 3},
                          training={"learning_rate": 0.1})
    with caplog.at_level(logging.WARNING, logger="neuroude"):
        fit_run(changed, tmp_path / "run", resume=True, quiet=True, steps=3)
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any("training.learning_rate" in warning and "ignored" in warning for warning in warnings), warnings


def test_short_fit_warns_before_full_kl():
    from neuroude.workflow import _kl_warmup_warning

    # tiny_config warms the KL up over 4 steps, so a 2-step fit ends at beta 1/4.
    assert "beta ends at 0.25 instead of 1" in _kl_warmup_warning(tiny_config(training={"steps": 2}))
    assert _kl_warmup_warning(tiny_config(training={"steps": 4})) is None
    assert _kl_warmup_warning(tiny_config(training={"steps": 2, "kl_schedule": "constant"})) is None


def test_backsolve_adjoint_warns():
    from neuroude.workflow import _adjoint_warning

    ode = {"diffusion": "none"}
    assert "60 to 81 times" in _adjoint_warning(tiny_config(model=ode, solver={"method": "tsit5", "adjoint": "backsolve"}))
    assert _adjoint_warning(tiny_config(model=ode, solver={"method": "tsit5"})) is None
    assert _adjoint_warning(tiny_config(solver={"method": "euler", "adjoint": "backsolve"})) is None
