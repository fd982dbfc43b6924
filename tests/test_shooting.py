"""Multiple shooting: segments joined by a continuity penalty, as a training objective."""

import csv

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config, tiny_recording
from neuroude.build import build_model
from neuroude.config import parse_config
from neuroude.data import Recording, save_npz
from neuroude.dynamics.mechanistic.van_der_pol import VanDerPol
from neuroude.errors import ConfigError
from neuroude.shooting import MultipleShooting, continuity_penalty, integrate_segments
from neuroude.runs import RunFolder
from neuroude.train import fit, multiple_shooting
from neuroude.workflow import fit_run

BIN_WIDTH = 0.01


@pytest.fixture(scope="module")
def batch():
    recording = tiny_recording(n_trials=4, n_time=12)
    y = jnp.asarray(recording.y, jnp.float32)
    return y, jnp.asarray(recording.u, jnp.float32), jnp.ones_like(y)


def _model(**solver):
    config = tiny_config(solver={"n_substeps": 2, **solver})
    return build_model(config, 3, 1, jax.random.PRNGKey(0), 0.5)


@pytest.fixture(scope="module")
def sde_model():
    # Heun with checkpointed segments of 3 bins: segments that start inside a checkpointed piece must still
    # draw the noise of their own bins.
    return _model(method="heun", checkpoint_bins=3)


@eqx.filter_jit
def _loss(model, batch, key, beta, n_samples, shooting=None):
    return model.loss(*batch, 0.0, BIN_WIDTH, key, beta, n_samples, None, shooting)


def test_one_segment_equals_plain_loss(batch, sde_model):
    key = jax.random.PRNGKey(3)
    plain, _ = _loss(sde_model, batch, key, 0.7, 2)
    shot, terms = _loss(sde_model, batch, key, 0.7, 2, MultipleShooting(12, 5.0))

    assert float(shot) == float(plain)
    assert float(terms["continuity_penalty"]) == 0.0


def test_several_segments_add_positive_penalty(batch, sde_model):
    plain, _ = _loss(sde_model, batch, jax.random.PRNGKey(3), 0.7, 2)
    shot, terms = _loss(sde_model, batch, jax.random.PRNGKey(3), 0.7, 2, MultipleShooting(4, 5.0))

    assert float(terms["continuity_penalty"]) > 0.0
    assert np.isfinite(float(shot))
    assert float(shot) != float(plain)


def test_continuity_penalty_by_hand():
    ends = jnp.array([[1.0, 2.0], [0.0, 0.0]])
    starts = jnp.array([[1.0, 2.0], [0.5, -1.0]])

    # Gaps (0, 0) and (-0.5, 1): 2 * (0.25 + 1) = 2.5.
    assert float(continuity_penalty(ends, starts, 2.0)) == pytest.approx(2.5)
    assert float(continuity_penalty(ends, ends, 2.0)) == 0.0


def test_segments_from_continuous_path_reproduce_it(batch, sde_model):
    # An SDE: the segments must draw the same Brownian increments as the whole path.
    model = sde_model
    y, stimulus, _ = batch
    drive = model.encode(stimulus[0])
    context = model.recognition.context(y[0], drive)
    key = jax.random.PRNGKey(5)
    x0 = jnp.array([0.3, -0.2])
    path, kl_path, _ = integrate_segments(model, drive, context, x0[None], 0.0, BIN_WIDTH, key)

    starts = path[::4]
    joined, joined_kl, ends = integrate_segments(model, drive, context, starts, 0.0, BIN_WIDTH, key)
    np.testing.assert_allclose(joined, path, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(joined_kl, kl_path, rtol=1e-5, atol=1e-7)
    assert float(continuity_penalty(ends, starts[1:], 3.0)) < 1e-9

    # Moving the last start by (0.1, -0.2) breaks the path only there: 3 * (0.01 + 0.04) = 0.15.
    broken = starts.at[-1].add(jnp.array([0.1, -0.2]))
    _, _, broken_ends = integrate_segments(model, drive, context, broken, 0.0, BIN_WIDTH, key)
    assert float(continuity_penalty(broken_ends, broken[1:], 3.0)) == pytest.approx(0.15, rel=1e-4)


def test_bad_shooting_values_rejected(batch, sde_model):
    with pytest.raises(ConfigError, match="shooting_bins is 1; expected an integer >= 2"):
        MultipleShooting(1, 1.0)
    with pytest.raises(ConfigError, match="shooting_penalty is -1.0"):
        MultipleShooting(4, -1.0)
    with pytest.raises(ConfigError, match="shooting_bins is 5, which does not divide the trial length of 12"):
        MultipleShooting(5, 1.0).n_segments(12)
    with pytest.raises(ConfigError, match="does not divide the trial length of 12"):
        _loss(sde_model, batch, jax.random.PRNGKey(0), 1.0, 1, MultipleShooting(5, 1.0))
    with pytest.raises(ConfigError, match="solver.shooting_bins"):
        parse_config({"solver": {"shooting_bins": 1}})
    with pytest.raises(ConfigError, match="training.shooting_penalty"):
        parse_config({"training": {"shooting_penalty": -2.0}})


def test_shooting_off_by_default():
    config = parse_config({})
    assert config.solver.shooting_bins is None
    assert multiple_shooting(config, 12) is None
    assert multiple_shooting(tiny_config(solver={"shooting_bins": 4}), 12) == MultipleShooting(4, 1.0)


def test_fit_run_rejects_non_divisor_before_writing(tmp_path):
    path = tmp_path / "tiny.npz"
    save_npz(tiny_recording(), path)
    config = tiny_config(data={"source": "npz", "path": str(path)}, solver={"shooting_bins": 5})
    with pytest.raises(ConfigError, match="does not divide the trial length of 12 bins"):
        fit_run(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# A van der Pol oscillator at time_scale 50/s (period about 0.13 s), observed for 0.5 s, fitted from 35/s.
TRUE_TIME_SCALE, START_TIME_SCALE = 50.0, 35.0
VDP_BIN_WIDTH, VDP_BINS = 0.005, 100


def _van_der_pol_recording() -> Recording:
    true = VanDerPol(0)

    def simulate(x0):
        def step(x, _):
            for _ in range(10):
                x = x + true(0.0, x, jnp.zeros(0)) * VDP_BIN_WIDTH / 10
            return x, x

        return jax.lax.scan(step, x0, None, length=VDP_BINS)[1]

    rng = np.random.default_rng(0)
    paths = jax.vmap(simulate)(jnp.asarray(rng.uniform(-2.5, 2.5, size=(10, 2)), jnp.float32))
    y = np.asarray(paths) + 0.1 * rng.normal(size=paths.shape)
    return Recording(y=y.astype(np.float32), ts=np.arange(VDP_BINS) * VDP_BIN_WIDTH, metadata={"source": "test"})


def _fit_van_der_pol(tmp_path, name, **solver):
    steps = 150
    config = tiny_config(
        model={"drift": "van_der_pol", "latent_size": 2, "diffusion": "none", "observation": "gaussian",
               "constants": {"time_scale": START_TIME_SCALE}, "frozen_constants": ["i_ext", "mu"],
               "n_init_bins": 5, "recognition_hidden": 16},
        solver={"method": "euler", "n_substeps": 2, **solver},
        training={"learning_rate": 0.1, "steps": steps, "warmup_steps": 10, "kl_warmup_steps": 0, "batch_size": 8,
                  "lr_schedule": "constant", "shooting_penalty": 1.0, "eval_every": steps, "checkpoint_every": steps,
                  "patience": 1, "nonfinite_lr_factor": 1.0},
        evaluation={"skip_bins": 5},
    )
    recording = _van_der_pol_recording()
    model = build_model(config, 2, 0, jax.random.PRNGKey(0), 0.0)
    run = RunFolder(tmp_path / name)
    run.prepare(resume=False, overwrite=False)
    split = {"train": list(range(8)), "validation": [8, 9], "test": []}
    result = fit(model, recording, config, split, run, quiet=True)

    assert result.state.step == steps
    # At this learning rate an early step can overshoot; the loop skips it, and at most a few may go.
    assert result.state.nonfinite_total <= 2
    return result


def test_shooting_recovers_van_der_pol_time_scale(tmp_path):
    single = _fit_van_der_pol(tmp_path, "single")
    multiple = _fit_van_der_pol(tmp_path, "multiple", shooting_bins=20)
    single_time_scale = float(single.model.sde.drift.time_scale.value)
    multiple_time_scale = float(multiple.model.sde.drift.time_scale.value)

    # One 100-bin path is about 4 periods long, and a 30% slower oscillator is out of phase over most of it.
    # Segments of 20 bins are shorter than one period, so the phase error stays small and the gradient
    # points towards the true time scale.
    print(f"time scale after 150 steps: single path {single_time_scale:.2f}, multiple shooting "
          f"{multiple_time_scale:.2f}, true {TRUE_TIME_SCALE}")
    start_error = abs(START_TIME_SCALE - TRUE_TIME_SCALE)
    assert abs(multiple_time_scale - TRUE_TIME_SCALE) < 0.4 * start_error
    assert abs(single_time_scale - TRUE_TIME_SCALE) > 0.8 * start_error

    # The fit records the penalty of every step that was not skipped; a single-path fit has none.
    penalties = np.array([row["continuity_penalty"] for row in multiple.state.history if row["finite"]])
    assert len(penalties) >= 148
    assert np.all(np.isfinite(penalties))
    assert np.all(penalties > 0.0)
    assert "continuity_penalty" not in single.state.history[0]
    with open(tmp_path / "multiple" / "history.csv") as stream:
        assert "continuity_penalty" in next(csv.reader(stream))
