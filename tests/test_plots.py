"""Run figures: titles name what a prediction reads, shown channels, shared colour scales, one training layout."""

import csv

import numpy as np
import pytest
from conftest import tiny_recording

from neuroude import plots, report_plots
from neuroude.data import Recording
from neuroude.report import read_history


@pytest.fixture
def drawn(monkeypatch):
    """Keep the figures that plots and report_plots would save, instead of closing them."""
    figures = []

    def keep(figure, path):
        figures.append(figure)
        return path

    monkeypatch.setattr(plots, "_save", keep)
    monkeypatch.setattr(report_plots, "_save", keep)
    yield figures
    for figure in figures:
        plots.plt.close(figure)


def prediction_of(recording):
    return {"mean": np.full(recording.y.shape, 0.5), "std": np.full(recording.y.shape, 0.1), "observation": "poisson"}


def sparse_recording(u=True) -> Recording:
    """Six channels over 3 trials, where channels 0 to 3 are silent and 4, 5 spike."""
    y = np.zeros((3, 20, 6))
    y[:, ::4, 4] = 1
    y[:, ::2, 5] = 2
    stimulus = np.ones((3, 20, 1)) if u else None
    return Recording(y=y, ts=np.arange(20) * 0.01, u=stimulus)


def test_predictions_show_most_active_channels(drawn, tmp_path):
    recording = sparse_recording()
    plots.plot_predictions(recording, prediction_of(recording), tmp_path / "p.png", 2, max_channels=2)
    labels = [axis.get_ylabel() for axis in drawn[0].axes if axis.get_ylabel()]
    assert any(label.startswith("channel 4") for label in labels), labels
    assert any(label.startswith("channel 5") for label in labels), labels
    assert not any(label.startswith("channel 0") for label in labels), labels


def test_most_active_channels_keep_order_when_silent():
    recording = Recording(y=np.zeros((2, 5, 6)), ts=np.arange(5) * 0.01)
    assert plots._most_active_channels(recording, 2, 4) == [0, 1, 2, 3]


def test_predictions_title_names_conditioning(drawn, tmp_path):
    with_stimulus, without = sparse_recording(u=True), sparse_recording(u=False)
    plots.plot_predictions(with_stimulus, prediction_of(with_stimulus), tmp_path / "a.png", 2)
    plots.plot_predictions(without, prediction_of(without), tmp_path / "b.png", 2)
    titles = [figure._suptitle.get_text() for figure in drawn]
    assert "from the stimulus and the first bins" in titles[0]
    assert "no stimulus" in titles[1]
    assert "stimulus alone" not in titles[1]
    assert "the 4 of 6 channels with the most activity" in titles[0]


def test_data_overview_shares_colour_scale(drawn, tmp_path):
    recording = tiny_recording(n_trials=3, n_channels=4)
    report_plots.plot_data_overview(recording, tmp_path / "d.png", "poisson")
    images = [image for axis in drawn[0].axes for image in axis.get_images()]
    assert len(images) == 3
    limits = {image.get_clim() for image in images}
    assert limits == {(0.0, float(recording.y[:3].max()))}
    colour_bars = [axis for axis in drawn[0].axes if axis.get_label() == "<colorbar>"]
    assert len(colour_bars) == 1


def history_rows():
    rows = []
    for step in range(1, 7):
        rows.append({"step": step, "loss": 10.0 / step, "log_likelihood": -9.0 / step, "kl_initial": 0.5,
                     "kl_path": 0.1 * step, "residual_penalty": 0.0, "beta": min(step / 3, 1.0), "grad_norm": 2.0,
                     "finite": True, "learning_rate": 1e-3, "skipped_steps": 0,
                     "validation_metric": 0.1 * step if step % 3 == 0 else None})
    return rows


def line_data(figure):
    return [[(line.get_label(), line.get_color(), line.get_ydata().tolist()) for line in axis.get_lines()]
            for axis in figure.axes]


def test_fit_and_report_draw_same_training_figure(drawn, tmp_path):
    rows = history_rows()
    with open(tmp_path / "history.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({name: ("" if value is None else value) for name, value in row.items()} for row in rows)
    evaluations = [{"step": row["step"], "validation_metric": row["validation_metric"]}
                   for row in rows if row["validation_metric"] is not None]

    plots.plot_training(rows, evaluations, tmp_path / "fit.png", "bits per spike")
    report_plots.plot_training_history(read_history(tmp_path / "history.csv"), tmp_path / "report.png",
                                       "bits per spike")
    assert line_data(drawn[0]) == line_data(drawn[1])
    kl_lines = {label: colour for label, colour, _ in line_data(drawn[0])[2]}
    assert kl_lines == {"initial state": "C1", "path": "C0"}


def test_data_overview_title_counts_one_channel(drawn, tmp_path):
    report_plots.plot_data_overview(tiny_recording(n_trials=3, n_channels=1), tmp_path / "d.png", "poisson")
    assert "3 trials, 1 channel," in drawn[0]._suptitle.get_text()


def test_skipped_steps_axis_starts_at_zero(drawn, tmp_path):
    history = plots.history_columns(history_rows())
    report_plots.plot_training_history(history, tmp_path / "t.png", "bits per spike")
    skipped = next(axis for axis in drawn[0].axes if axis.get_title().startswith("skipped steps"))
    assert skipped.get_ylim() == (0.0, 1.0)
