"""Samples at irregular times: placement on the solver grid, errors, likelihood and a tiny fit."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroude.data import Recording, load_npz, save_npz
from neuroude.errors import DataError
from conftest import tiny_config

DT = 0.01


def _traces(n_trials=4, n_time=12, n_channels=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n_trials, n_time, n_channels)).astype(np.float32)


@eqx.filter_jit
def _loss_terms(model, y, stimulus, mask, t0, bin_width):
    return model.loss(y, stimulus, mask, t0, bin_width, jax.random.PRNGKey(3))[1]


def _log_likelihood(model, recording):
    """Return the ELBO's log-likelihood term of `recording` with a fixed key, through the solver."""
    mask = np.ones(recording.y.shape, bool) if recording.mask is None else recording.mask
    stimulus = jnp.zeros(recording.y.shape[:2] + (0,))
    terms = _loss_terms(
        model, jnp.asarray(recording.y), stimulus, jnp.asarray(mask, jnp.float32), float(recording.ts[0]),
        float(recording.dt),
    )
    return float(terms["log_likelihood"])


@pytest.fixture(scope="module")
def gaussian_model():
    from neuroude.build import build_model

    config = tiny_config(model={"observation": "gaussian"})
    return build_model(config, 3, 0, jax.random.PRNGKey(0), 0.0)


def test_regular_times_match_regular_grid(gaussian_model):
    y = _traces()
    times = np.tile(np.arange(12) * DT, (4, 1))
    irregular = Recording.from_irregular(times, y, bin_width=DT)
    regular = Recording(y=y, ts=np.arange(12) * DT)

    np.testing.assert_array_equal(irregular.y, regular.y)
    np.testing.assert_allclose(irregular.ts, regular.ts)
    assert irregular.mask.all()
    assert _log_likelihood(gaussian_model, irregular) == pytest.approx(_log_likelihood(gaussian_model, regular), rel=1e-6)


def test_dropped_and_jittered_samples_match_masked_grid(gaussian_model):
    # Frames 0..11 every DT, with frames 4 and 9 dropped and the rest jittered by less than DT / 2.
    rng = np.random.default_rng(1)
    y = _traces()
    kept = np.array([i for i in range(12) if i not in (4, 9)])
    times = [kept * DT + rng.uniform(-0.4, 0.4, kept.size) * DT for _ in range(4)]
    for trial_times in times:
        trial_times[0], trial_times[-1] = max(trial_times[0], 0.0), min(trial_times[-1], 11 * DT)
    irregular = Recording.from_irregular(times, [trial[kept] for trial in y], bin_width=DT, duration=11 * DT)

    mask = np.ones(y.shape, bool)
    mask[:, [4, 9]] = False
    masked = Recording(y=np.where(mask, y, 0.0), ts=np.arange(12) * DT, mask=mask)

    np.testing.assert_array_equal(irregular.mask, masked.mask)
    np.testing.assert_array_equal(irregular.y, masked.y)
    assert irregular.metadata["sample_times"]["largest_offset"] <= DT / 2
    assert irregular.metadata["sample_times"]["n_samples"] == 4 * kept.size
    assert _log_likelihood(gaussian_model, irregular) == pytest.approx(_log_likelihood(gaussian_model, masked), rel=1e-6)


def test_each_sample_goes_to_nearest_grid_point():
    times = [np.array([0.0, 0.013, 0.052, 0.0996])]
    values = [np.array([[1.0], [2.0], [3.0], [4.0]])]
    recording = Recording.from_irregular(times, values, bin_width=0.02, duration=0.1)

    np.testing.assert_allclose(recording.ts, np.arange(6) * 0.02)
    np.testing.assert_array_equal(recording.mask[0, :, 0], [True, True, False, True, False, True])
    np.testing.assert_array_equal(recording.y[0, :, 0], [1.0, 2.0, 0.0, 3.0, 0.0, 4.0])


@pytest.mark.parametrize(
    ("times", "options", "expected"),
    [
        ([[0.0, 0.03, 0.02, 0.05]], {}, "trial 0 is unsorted at index 2"),
        ([[0.0, 0.01, 0.02, 0.03], [0.0, 0.02, 0.01, 0.03]], {}, "trial 1 is unsorted at index 2"),
        ([[0.0, np.nan, 0.02, 0.03]], {}, "trial 0 is nan at index 1"),
        ([[0.0, 0.01, 0.02, 0.03]], {"t_start": 0.005}, "before the trial starts"),
        ([[0.0, 0.01, 0.02, 0.5]], {"duration": 0.1}, "index 3, after the trial ends"),
        ([[0.0, 0.011, 0.014, 0.03]], {}, "samples 1 and 2 of trial 0"),
    ],
)
def test_invalid_sample_times_are_rejected(times, options, expected):
    values = np.ones((len(times), 4, 1))
    with pytest.raises(DataError, match="(?i)" + expected.replace("(", r"\(")):
        Recording.from_irregular(np.array(times), values, bin_width=0.01, **options)


def test_npz_sample_times_round_trip(tmp_path):
    y = _traces(n_trials=2, n_time=5, n_channels=2)
    times = np.array([[0.0, 0.021, 0.05, 0.07, 0.1], [0.002, 0.03, 0.04, 0.081, 0.09]])
    path = tmp_path / "irregular.npz"
    np.savez(path, y=y, sample_times=times, dt=0.01, duration=0.1)

    recording = load_npz(path)
    assert recording.y.shape == (2, 11, 2)
    assert recording.mask.sum() == 2 * 5 * 2
    np.testing.assert_array_equal(recording.y[1, 8], y[1, 3])

    save_npz(recording, tmp_path / "gridded.npz")
    np.testing.assert_array_equal(load_npz(tmp_path / "gridded.npz").mask, recording.mask)


def test_npz_unsorted_times_name_file_and_trial(tmp_path):
    path = tmp_path / "unsorted.npz"
    np.savez(path, y=np.ones((2, 3, 1)), sample_times=np.array([[0.0, 0.01, 0.02], [0.0, 0.03, 0.02]]), dt=0.01)
    with pytest.raises(DataError, match=r"unsorted.npz: sample_times of trial 1 is unsorted at index 2"):
        load_npz(path)


@pytest.fixture(scope="module")
def irregular_fit(tmp_path_factory):
    """A two-step fit on irregular samples, with the log records it emitted."""
    import logging

    from neuroude.workflow import fit_run

    folder = tmp_path_factory.mktemp("irregular")
    rng = np.random.default_rng(2)
    n_trials, n_samples = 10, 9
    times = np.array([np.sort(rng.choice(16, n_samples, replace=False)) for _ in range(n_trials)]) * DT
    times = times + rng.uniform(-0.3, 0.3, times.shape) * DT
    times = np.clip(times, 0.0, 15 * DT)
    values = np.sin(2 * np.pi * times)[..., None] + 0.1 * rng.normal(size=(n_trials, n_samples, 2))
    # Behaviour sampled at its own times, every third grid point from 0.01 s.
    behaviour_times = np.tile(np.arange(1, 16, 3) * DT, (n_trials, 1))
    behaviour = np.cos(2 * np.pi * behaviour_times)[..., None] + 0.1 * rng.normal(size=behaviour_times.shape + (1,))
    path = folder / "irregular.npz"
    np.savez(path, y=values, sample_times=times, dt=DT, duration=15 * DT, behaviour=behaviour,
             behaviour_times=behaviour_times)

    # The default split leaves 6 training trials, so a batch of 8 also exercises the batch-size warning.
    config = tiny_config(
        data={"source": "npz", "path": str(path)}, model={"observation": "gaussian", "behaviour": {}},
        training={"steps": 2, "batch_size": 8},
    )
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("neuroude")
    logger.addHandler(handler)
    try:
        run = fit_run(config, folder / "run", quiet=True)
    finally:
        logger.removeHandler(handler)
    metrics = json.loads((folder / "run" / "metrics.json").read_text())
    return run, metrics, [record.getMessage() for record in records if record.levelno == logging.WARNING]


def test_tiny_fit_on_irregular_samples(irregular_fit):
    run, metrics, _ = irregular_fit
    assert run.recording.y.shape == (10, 16, 2)
    assert not run.recording.mask.all()
    assert np.isfinite(metrics["test"]["model"]["r_squared"])


def test_tiny_fit_reads_masks(irregular_fit):
    run, metrics, _ = irregular_fit
    assert run.model.recognition_reads_mask
    np.testing.assert_array_equal(run.recording.behaviour_mask[0, :, 0], np.arange(16) % 3 == 1)
    assert set(metrics["behaviour_r_squared"]) == {"posterior", "prediction"}
    assert np.isfinite(metrics["behaviour_decoding"]["ridge"]["r_squared"]["mean"])
    assert np.isfinite(metrics["behaviour_decoding"]["behaviour_head"]["coverage"]["0.9"])


def test_batch_larger_than_training_set_warns(irregular_fit):
    run, _, warnings = irregular_fit
    assert len(run.split["train"]) == 6
    assert any("training.batch_size is 8, larger than the 6 training trials" in message for message in warnings)


def test_summary_counts_selected_samples():
    times = [np.array([0.0, 0.013, 0.05]), np.array([0.01, 0.02])]
    recording = Recording.from_irregular(times, [np.ones((3, 1)), np.ones((2, 1))], bin_width=0.01)

    assert "5 samples placed on the grid, at most 0.003 s" in recording.summary()
    assert "2 samples placed on the grid" in recording.select([1]).summary()


def test_sample_mask_hides_missing_values():
    values = np.array([[[1.0, np.nan], [2.0, 3.0]]])
    sample_mask = np.array([[[True, False], [True, True]]])
    recording = Recording.from_irregular(np.array([[0.0, 0.02]]), values, bin_width=0.01, sample_mask=sample_mask)

    np.testing.assert_array_equal(recording.mask[0], [[True, False], [False, False], [True, True]])
    np.testing.assert_array_equal(recording.y[0], [[1.0, 0.0], [0.0, 0.0], [2.0, 3.0]])
    with pytest.raises(DataError, match=r"values of trial 0 are NaN or infinite at \(sample, channel\) \(0, 1\)"):
        Recording.from_irregular(np.array([[0.0, 0.02]]), values, bin_width=0.01)


def test_input_must_be_on_grid():
    times, values = np.array([[0.0, 0.02]]), np.ones((1, 2, 1))
    recording = Recording.from_irregular(times, values, bin_width=0.01, u=np.zeros((1, 3, 2)))
    assert recording.u.shape == (1, 3, 2)
    with pytest.raises(DataError, match=r"u has shape \(1, 2, 1\); expected the input on the solver grid, \(1, 3, inputs\)"):
        Recording.from_irregular(times, values, bin_width=0.01, u=np.zeros((1, 2, 1)))
