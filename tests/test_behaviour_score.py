"""Held-out R^2 of the jointly fitted behaviour head in metrics.json."""

import csv
import json
import logging
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroude.behaviour_score import _head_on_paths, _r_squared_per_variable
from neuroude.data import Recording, save_npz
from neuroude.decoding import head_prediction
from neuroude.evaluate import predict_recording
from neuroude.metrics import r_squared, score_window

from conftest import tiny_config

N_TRIALS, N_TIME = 10, 12
PIXEL_OFFSET, PIXEL_SCALE = 1000.0, 400.0


def test_r_squared_per_variable_known_values():
    rng = np.random.default_rng(0)
    behaviour = rng.normal(size=(3, 8, 3))
    behaviour[..., 2] = 1.5
    prediction = behaviour.copy()
    # Variable 1 is predicted by its own mean over the scored bins, which gives R^2 = 0 exactly.
    prediction[:, 2:, 1] = behaviour[:, 2:, 1].mean()
    observed = np.ones(behaviour.shape, bool)

    scores = _r_squared_per_variable(behaviour, prediction, observed, 2, ["x", "y", "flat"])

    assert scores["x"] == pytest.approx(1.0)
    assert scores["y"] == pytest.approx(0.0, abs=1e-12)
    assert scores["flat"] is None
    assert scores["mean"] == pytest.approx(0.5)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    from neuroude.workflow import fit_run

    folder = tmp_path_factory.mktemp("behaviour")
    rng = np.random.default_rng(1)
    u = np.sin(np.linspace(0, 6, N_TIME))[None, :, None] + 0.1 * rng.normal(size=(N_TRIALS, N_TIME, 1))
    y = 2.0 * u + 0.3 * rng.normal(size=(N_TRIALS, N_TIME, 3))
    behaviour = np.concatenate([np.cumsum(u, axis=1) * 0.1, -u], axis=2) + 0.05 * rng.normal(size=(N_TRIALS, N_TIME, 2))
    # In pixels, as a video tracker gives them; the head must fit them without diverging.
    behaviour = PIXEL_OFFSET + PIXEL_SCALE * behaviour
    behaviour_mask = np.ones(behaviour.shape, bool)
    # Filler where the tracker lost the animal: it must not enter the statistics or the scores.
    behaviour[0, :4, 0] = 1e7
    behaviour_mask[0, :4, 0] = False
    # One lost sample in every trial, so the test trials have one whichever trials the split picks.
    behaviour_mask[:, -1, 1] = False
    recording = Recording(
        y=y, ts=np.arange(N_TIME) * 0.1, u=u, behaviour=behaviour, behaviour_mask=behaviour_mask,
        metadata={"behaviour_names": ["position", "velocity"]},
    )
    save_npz(recording, folder / "behaviour.npz")
    config = tiny_config(
        data={"source": "npz", "path": str(folder / "behaviour.npz")},
        model={"observation": "gaussian", "behaviour": {"weight": 1.0}, "diffusion": "none",
               "drift_time_constant": 0.5},
        training={"steps": 20, "batch_size": 4, "eval_every": 10},
    )
    logger = logging.getLogger("neuroude")
    handler = RecordingHandler()
    logger.addHandler(handler)
    try:
        run = fit_run(config, folder / "run", quiet=True)
    finally:
        logger.removeHandler(handler)
    FIT_WARNINGS.extend(handler.warnings)
    return run, json.loads((folder / "run" / "metrics.json").read_text())


FIT_WARNINGS = []


class RecordingHandler(logging.Handler):
    """Keeps the warnings of the module's fit, which a module-scoped fixture cannot read with caplog."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.warnings = []

    def emit(self, record):
        self.warnings.append(record.getMessage())


def test_metrics_have_behaviour_r_squared(fitted):
    _, metrics = fitted
    scores = metrics["behaviour_r_squared"]

    assert set(scores) == {"posterior", "prediction"}
    for path_kind in ("posterior", "prediction"):
        assert set(scores[path_kind]) == {"position", "velocity", "mean"}
        assert np.isfinite(scores[path_kind]["mean"])
        assert scores[path_kind]["mean"] == pytest.approx(
            (scores[path_kind]["position"] + scores[path_kind]["velocity"]) / 2
        )


def test_prediction_score_matches_head_on_prior_paths(fitted):
    # evaluate() samples the test trials with the second of two keys split from PRNGKey(seed + 1).
    run, metrics = fitted
    test = run.recording.select(run.split["test"])
    key = jax.random.split(jax.random.PRNGKey(run.config.seed + 1))[1]
    paths = predict_recording(run.model, test, key, run.config.evaluation.n_samples)["paths"]
    expected = np.asarray(_head_on_paths(run.model, paths))

    skip = run.config.evaluation.skip_bins
    observed = score_window(test.behaviour_observed[..., 1:], skip)
    velocity = r_squared(score_window(test.behaviour[..., 1:], skip), score_window(expected[..., 1:], skip), observed)
    assert metrics["behaviour_r_squared"]["prediction"]["velocity"] == pytest.approx(velocity, rel=1e-4)


def test_decoding_log_line_names_variables(fitted):
    run, metrics = fitted
    lines = [line for line in run.folder.log.read_text().splitlines() if "behaviour decoding on test trials" in line]
    assert len(lines) == 1
    ridge, head = metrics["behaviour_decoding"]["ridge"], metrics["behaviour_decoding"]["behaviour_head"]
    ridge_r_squared = ridge["r_squared"]
    assert (f"ridge decoder R^2 position {ridge_r_squared['position']:.3f}, velocity "
            f"{ridge_r_squared['velocity']:.3f} (mean {ridge_r_squared['mean']:.3f})") in lines[0]
    assert (f"behaviour head R^2 position {head['r_squared']['position']:.3f}") in lines[0]
    assert (f"coverage {head['coverage']['0.5']:.2f} of the 50% interval and {head['coverage']['0.9']:.2f} of the "
            "90% interval") in lines[0]


# -- standardisation (model.behaviour.standardize, on by default) -------------------------------


def test_statistics_come_from_observed_training_entries(fitted):
    run, _ = fitted
    train = run.recording.select(run.split["train"])
    observed = train.behaviour_observed
    for index in range(2):
        values = train.behaviour[..., index][observed[..., index]].astype(np.float64)
        assert run.model.behaviour.offset[index] == pytest.approx(values.mean(), rel=1e-6)
        assert run.model.behaviour.scale[index] == pytest.approx(values.std(), rel=1e-6)
    every_trial = run.recording.behaviour[..., 1].astype(np.float64)
    assert run.model.behaviour.offset[1] != pytest.approx(every_trial.mean(), rel=1e-6)


def test_pixel_scale_fit_stays_finite(fitted):
    run, metrics = fitted
    with open(run.folder.root / "history.csv", newline="") as file:
        values = [float(row["behaviour_log_likelihood"]) for row in csv.DictReader(file)]
    assert len(values) == 20
    assert np.all(np.isfinite(values))
    assert metrics["training"]["nonfinite_steps"] == 0
    # The scale warning is for heads that fit raw values.
    assert not [message for message in FIT_WARNINGS if "has standard deviation" in message]
    # On the standardised scale the per-trial log-likelihood is of order -(bins x variables). On
    # the pixel scale it would start near -(400^2 / 2) per entry.
    assert values[-1] > -10 * N_TIME * 2


def test_head_predictions_in_original_units(fitted):
    run, _ = fitted
    paths = np.random.default_rng(3).normal(size=(2, 3, N_TIME, 2))
    prediction = head_prediction(run.model, paths)
    head = run.model.behaviour
    weight, bias = np.asarray(head.readout.weight, np.float64), np.asarray(head.readout.bias, np.float64)
    by_hand = np.asarray(head.offset) + np.asarray(head.scale) * (paths @ weight.T + bias)
    np.testing.assert_allclose(prediction.samples, by_hand, rtol=1e-6)
    from_module = np.asarray(jax.vmap(jax.vmap(head.mean))(jnp.asarray(paths, jnp.float32)))
    np.testing.assert_allclose(from_module, by_hand, rtol=1e-4)
    np.testing.assert_allclose(prediction.noise_std, np.exp(np.asarray(head.log_std)) * np.asarray(head.scale), rtol=1e-6)


def test_saved_run_round_trips(fitted):
    from neuroude.workflow import load_run

    run, _ = fitted
    loaded = load_run(run.folder.root)
    assert loaded.model.behaviour.offset == run.model.behaviour.offset
    assert loaded.model.behaviour.scale == run.model.behaviour.scale
    x = jnp.ones((4, 2), jnp.float32)
    np.testing.assert_allclose(loaded.model.behaviour.mean(x), run.model.behaviour.mean(x))


def test_run_saved_before_the_key_fits_raw_behaviour(fitted, tmp_path):
    # A config.yaml written before model.behaviour.standardize existed has no such key; that run fitted raw values.
    from neuroude.config import load_config
    from neuroude.workflow import load_run

    run, _ = fitted
    old = tmp_path / "old-run"
    shutil.copytree(run.folder.root, old)
    saved = (old / "config.yaml").read_text()
    assert "standardize: true" in saved
    (old / "config.yaml").write_text(saved.replace("    standardize: true\n", ""))

    assert load_config(old / "config.yaml").model.behaviour.standardize is True
    loaded = load_run(old)
    assert loaded.config.model.behaviour.standardize is False
    assert not loaded.model.behaviour.standardised


# -- figure of recorded against predicted behaviour ------------------------------------------------


def test_behaviour_label_spells_out_units():
    from neuroude.plots import behaviour_label

    assert behaviour_label("x_px") == "x (px)"
    assert behaviour_label("speed_px_per_s") == "speed (px/s)"
    assert behaviour_label("position") == "position"
    assert behaviour_label("px") == "px"


def test_fit_writes_behaviour_figure(fitted):
    run, _ = fitted
    figure = run.folder.figures / "behaviour.png"
    assert figure.is_file()
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_behaviour_figure_shows_scored_prediction(fitted, tmp_path):
    # The figure's prediction must be the one metrics.json scores, so its R^2 matches.
    from neuroude.decoding import head_test_prediction
    from neuroude.workflow import plot_behaviour_figure

    run, metrics = fitted
    train, validation, test = (run.recording.select(run.split[name]) for name in ("train", "validation", "test"))
    key = jax.random.fold_in(jax.random.PRNGKey(run.config.seed + 1), 2)
    prediction = head_test_prediction(run.model, train, validation, test, run.config.evaluation.n_samples, key)

    skip = run.config.evaluation.skip_bins
    mean = score_window(prediction.mean, skip)
    observed = score_window(test.behaviour_observed, skip)
    velocity = r_squared(score_window(test.behaviour, skip)[..., 1:], mean[..., 1:], observed[..., 1:])
    assert metrics["behaviour_decoding"]["behaviour_head"]["r_squared"]["velocity"] == pytest.approx(velocity, rel=1e-4)

    # The fit draws the prediction that evaluate() returns, so drawing the paths sampled again gives the same bytes.
    redrawn = plot_behaviour_figure(run.model, run.recording, run.split, run.config, tmp_path / "behaviour.png",
                                    prediction)
    assert redrawn.read_bytes() == (run.folder.figures / "behaviour.png").read_bytes()


def test_samples_file_has_behaviour(fitted):
    from neuroude.workflow import sample_run

    run, _ = fitted
    with np.load(sample_run(run.folder.root, n_samples=3), allow_pickle=False) as samples:
        paths, behaviour_mean = samples["paths"], samples["behaviour_mean"]
        recorded, names = samples["behaviour"], samples["behaviour_names"]
        description = str(samples["description"])
    n_test = len(run.split["test"])
    assert behaviour_mean.shape == (n_test, 3, N_TIME, 2)
    np.testing.assert_allclose(behaviour_mean, head_prediction(run.model, paths).samples, rtol=1e-5)
    assert names.tolist() == ["position", "velocity"]
    test = run.recording.select(run.split["test"])
    observed = test.behaviour_observed
    np.testing.assert_allclose(recorded[observed], test.behaviour[observed], rtol=1e-6)
    assert (~observed).any()
    assert np.isnan(recorded[~observed]).all()
    assert "behaviour_mean: (trials, samples, time, behaviour variables)" in description


# -- report ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report_page(fitted):
    from neuroude.report import write_report

    run, _ = fitted
    return write_report(run.folder.root).read_text()


def test_report_shows_behaviour_figure_and_table(report_page, fitted):
    _, metrics = fitted
    behaviour_part = report_page.split("<h2>Behaviour</h2>")[1].split("<h2>")[0]
    assert 'alt="Behaviour (behaviour.png)"' in behaviour_part
    assert "posterior" in behaviour_part
    assert "<td>velocity</td>" in behaviour_part
    head_r_squared = metrics["behaviour_r_squared"]["posterior"]["velocity"]
    assert f"<td>{head_r_squared:.4g}</td>" in behaviour_part
    coverage = metrics["behaviour_decoding"]["behaviour_head"]["coverage"]["0.9"]
    assert f"<td>{coverage:.4g}</td>" in behaviour_part
    assert "<h2>Behaviour calibration</h2>" in report_page


def test_report_keeps_behaviour_out_of_other_figures(report_page):
    other = report_page.split("<h2>Other figures</h2>")[1] if "<h2>Other figures</h2>" in report_page else ""
    assert "behaviour.png" not in other
    assert "behaviour_calibration.png" not in other


def test_report_summary_names_behaviour_variables(report_page):
    assert "behaviour: 2 variables (position, velocity)" in report_page


def test_model_summary_rows_add_up_to_total(fitted):
    from neuroude.summary import count_parameters

    run, _ = fitted
    text = run.model.summary()
    rows = text.split("parameters per module:\n")[1].splitlines()
    counts = [int(row.split()[2]) for row in rows if row.startswith("    ") and row.split()[2].isdigit()]
    assert any(row.split()[0] == "behaviour" for row in rows)
    assert sum(counts) == count_parameters(run.model)[0]
