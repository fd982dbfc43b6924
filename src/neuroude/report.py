"""A run's report: one self-contained HTML page that explains a fitted run, and its figures as PNG.

`write_report(RUN_DIR)` loads the run's best checkpoint, data, `history.csv`
and `metrics.json`, draws the figures into `RUN_DIR/figures/` and writes
`RUN_DIR/report.html`. The page embeds every figure as a base64 data URI and
has no scripts, stylesheets or fonts from elsewhere, so it opens offline and
can be mailed as one file. Figures found in `RUN_DIR/figures/` that the report
does not draw itself (from `neuroude analyze`, for example) appear under
"Other figures".
"""

from __future__ import annotations

import base64
import csv
import html
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import plots, report_plots
from .config import dump_config
from .evaluate import predict_recording
from .runs import write_text
from .summary import describe_config, describe_model, find_constants, published_default
from .workflow import Run, _model_for, load_run, plot_behaviour_figure

logger = logging.getLogger("neuroude")

REPORT_NAME = "report.html"

# Figures the report draws, in page order. Other images in RUN_DIR/figures are shown under "Other figures".
# `neuroude fit` and `evaluate` draw training.png and heldout_predictions.png with the same functions.
# NOTE: they draw latent_paths.png with `plots.plot_latents`, so after them that file differs from the
# report's until the report is rewritten.
REPORT_FIGURES = (
    "data_overview.png", "training.png", "heldout_predictions.png", "latent_paths.png", "initial_states.png",
    "diffusion.png", "constants.png",
)
# Drawn only for a recording with behaviour, between the initial states and the constants.
BEHAVIOUR_FIGURES = ("behaviour.png", "behaviour_calibration.png")
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}


@dataclass
class Section:
    """One part of the report: a heading, a figure (or None), an explanation under it and optional HTML after it."""

    title: str
    figure: Path | None
    caption: str
    extra_html: str = ""


def read_history(path: Path) -> dict[str, np.ndarray] | None:
    """Read `history.csv` into one float array per column; empty cells become NaN, True/False become 1/0."""
    if not path.is_file():
        return None
    with open(path, newline="") as stream:
        rows = list(csv.DictReader(stream))
    if not rows:
        return None

    def number(text: str) -> float:
        if text in ("", "None"):
            return np.nan
        if text in ("True", "False"):
            return float(text == "True")
        return float(text)

    return {name: np.array([number(row.get(name) or "") for row in rows]) for name in rows[0]}


def condition_labels(recording) -> tuple[list[str], str]:
    """Return one group label per trial and the name of the grouping.

    The grouping is `metadata["trial_info"]["condition"]` when present, else
    the first per-trial entry with fewer distinct values than trials (such as
    the source recording), else each trial on its own.
    """
    trial_info = recording.metadata.get("trial_info", {})
    candidates = (["condition"] if "condition" in trial_info else []) + sorted(trial_info)
    for name in candidates:
        values = [str(value) for value in trial_info[name]]
        if 1 < len(set(values)) < recording.n_trials:
            return [f"{name} {value}" for value in values], name
    return [f"trial {index}" for index in range(recording.n_trials)], "trial"


@eqx.filter_jit
def _initial_states(model, y, stimulus, mask):
    def one_trial(yi, si, mi):
        return model.recognition.initial_state(model.recognition_input(yi, mi), model.encode(si))

    return jax.vmap(one_trial)(y, stimulus, mask)


@eqx.filter_jit
def _drive(model, stimulus):
    return jax.vmap(model.encode)(stimulus)


@eqx.filter_jit
def _sigma_on_grid(model, points, drive):
    return jax.vmap(lambda x: model.sde.diffusion(0.0, x, drive))(points)


def _stimulus(recording) -> np.ndarray:
    if recording.u is not None:
        return recording.u
    return np.zeros(recording.y.shape[:2] + (0,), np.float32)


def diffusion_grid(model, mean_paths: np.ndarray, drive: np.ndarray, n_points: int = 40) -> dict:
    """Evaluate the diagonal diffusion sigma(x, u) on a grid over latents 1 and 2.

    The grid spans the range of the mean paths, widened by 5% on each side.
    The other latents are held at their mean over the paths and the drive `u`
    at its mean over trials and time. Returns `axes`, `sigma`
    (grid shape + (min(latents, 2),)) and the `paths` to draw over it.
    """
    n_latents = mean_paths.shape[-1]
    n_axes = min(n_latents, 2)
    flat = mean_paths.reshape(-1, n_latents)
    centre = flat.mean(axis=0)
    coordinates = []
    for index in range(n_axes):
        low, high = flat[:, index].min(), flat[:, index].max()
        pad = 0.05 * (high - low) + 1e-3
        coordinates.append(np.linspace(low - pad, high + pad, n_points))

    mesh = np.meshgrid(*coordinates, indexing="ij")
    points = np.tile(centre, (mesh[0].size, 1))
    for index in range(n_axes):
        points[:, index] = mesh[index].ravel()
    sigma = np.asarray(_sigma_on_grid(model, jnp.asarray(points, jnp.float32), jnp.asarray(drive, jnp.float32)))
    sigma = sigma[:, :n_axes].reshape(mesh[0].shape + (n_axes,))
    return {"axes": coordinates, "sigma": sigma, "paths": mean_paths}


def constant_rows(model, initial_model) -> list[dict]:
    """List each mechanistic constant of the drift with its published default, initial and fitted value."""
    initial = {path: constant for path, _, _, constant in find_constants(initial_model.sde.drift)}
    rows = []
    for path, owner, name, constant in find_constants(model.sde.drift):
        rows.append({
            "name": path,
            "default": published_default(owner, name),
            "initial": np.asarray(initial[path].value) if path in initial else np.nan,
            "fitted": np.asarray(constant.value),
            "learnable": constant.learnable,
            "transform": constant.transform,
        })
    return rows


# -- figures ------------------------------------------------------------------


def _test_prediction(run: Run) -> dict:
    # The key of `workflow.write_evaluation`, split as `evaluate.evaluate` splits it, so the
    # predictions drawn here are the ones that metrics.json scores.
    key = jax.random.PRNGKey(run.config.seed + 1)
    _, key_test = jax.random.split(key)
    test = run.recording.select(run.split["test"])
    prediction = predict_recording(run.model, test, key_test, run.config.evaluation.n_samples)
    prediction["observation"] = run.config.model.observation
    return prediction


def _metric_name(run: Run) -> str:
    return "bits per spike" if run.config.model.observation == "poisson" else "R^2"


def _training_section(run: Run, figures: Path) -> Section:
    history = read_history(run.folder.history)
    if history is None:
        return Section("Training", None, "history.csv is missing or empty, so there are no training curves.")
    path = report_plots.plot_training_history(history, figures / "training.png", _metric_name(run))
    caption = (
        "Each training step's terms of the objective (negative ELBO = -log-likelihood + beta (KL initial + KL path) "
        "+ residual penalty, per trial, averaged over the minibatch), the KL weight beta, the validation metric at "
        "each evaluation, the learning rate, the gradient norm before clipping and the cumulative count of steps "
        "skipped because their loss or gradient was not finite or their solver raised an error."
    )
    return Section("Training", path, caption)


def _prediction_sections(run: Run, figures: Path) -> list[Section]:
    test = run.recording.select(run.split["test"])
    prediction = _test_prediction(run)
    skip = run.config.evaluation.skip_bins
    sections = [Section(
        "Held-out predictions",
        plots.plot_predictions(test, prediction, figures / "heldout_predictions.png", skip, run.split["test"]),
        f"Test trials with the mean prediction and a band of one standard deviation over "
        f"{run.config.evaluation.n_samples} samples of the prior SDE. The model reads "
        f"{'the stimulus and ' if test.u is not None else ''}the first "
        f"{run.model.recognition.n_init_bins} bins (to infer x0); the first {skip} bins (shaded) are not scored. "
        "The channels shown are those with the most activity in these trials.",
    )]

    labels, grouping = condition_labels(run.recording)
    test_labels = [labels[index] for index in run.split["test"]]
    sections.append(Section(
        "Latent paths",
        report_plots.plot_latent_paths(prediction["paths"], test.ts, test_labels, figures / "latent_paths.png",
                                       f"test trials, coloured by {grouping}"),
        f"Mean prior paths of the test trials, coloured by {grouping}.",
    ))
    sections.append(_diffusion_section(run, test, prediction, figures))
    return sections


def _diffusion_section(run: Run, test, prediction: dict, figures: Path) -> Section:
    if run.model.sde.is_ode:
        return Section("Diffusion", None, "The process model is an ODE (model.diffusion: none), so it has no diffusion.")
    drive = np.asarray(_drive(run.model, jnp.asarray(_stimulus(test)))).mean(axis=(0, 1))
    grid = diffusion_grid(run.model, prediction["paths"].mean(axis=1), drive)
    path = report_plots.plot_diffusion(grid, figures / "diffusion.png")
    return Section(
        "Diffusion", path,
        f"The learned diagonal diffusion sigma(x, u) of {type(run.model.sde.diffusion).__name__} over the plane of "
        "latents 1 and 2, with the test trials' mean paths in white. A constant map means additive noise.",
    )


def _initial_state_section(run: Run, figures: Path) -> Section:
    recording = run.recording
    mean, std = _initial_states(
        run.model, jnp.asarray(recording.y), jnp.asarray(_stimulus(recording)), jnp.asarray(recording.observed)
    )
    splits = [""] * recording.n_trials
    for name, indices in run.split.items():
        for index in indices:
            splits[index] = name
    path = report_plots.plot_initial_states(np.asarray(mean), np.asarray(std), splits,
                                            figures / "initial_states.png")
    return Section(
        "Inferred initial states", path,
        f"Mean and standard deviation of q(x0 | y) for every trial, read by the recognition model from the first "
        f"{run.model.recognition.n_init_bins} bins. The prior is N(0, I).",
    )


def _constants_section(run: Run, figures: Path) -> Section | None:
    rows = constant_rows(run.model, _model_for(run.recording, run.config, run.split))
    if not rows:
        return None
    path = report_plots.plot_constants(rows, figures / "constants.png")
    caption = ("Published default, initial value (the config's, or the default) and fitted value of each constant "
               "of the mechanistic drift.")
    identifiability = ((run.metrics or {}).get("constants") or {}).get("identifiability")
    if identifiability:
        caption += (" Identifiability comes from the Laplace Hessian in metrics.json: identifiable when the "
                    f"{100 * identifiability['rule']['level']:g} % interval lies within "
                    f"+-{100 * identifiability['rule']['tolerance']:g} % of the estimate, not identifiable when the "
                    "constant moves along a flat direction or the interval spans more than +-100 %.")
    return Section("Mechanistic constants", path, caption, _constants_table(rows, identifiability))


def _behaviour_sections(run: Run, figures: Path) -> list[Section]:
    if run.recording.behaviour is None:
        return []
    metrics = run.metrics or {}
    sections = []
    if run.model.behaviour is not None:
        path = plot_behaviour_figure(run.model, run.recording, run.split, run.config, figures / "behaviour.png")
        sections.append(Section(
            "Behaviour", path,
            "Recorded behaviour of the first test trials (black) against the behaviour head's prediction, in the "
            "recording's units: the mean over latent paths sampled from the posterior given each trial's neural "
            "data (never its behaviour), with the central 90% interval of the predictive distribution (path "
            "samples plus the head's noise). These are the predictions scored in the table below.",
            behaviour_table(metrics),
        ))
    elif "behaviour_decoding" in metrics:
        sections.append(Section("Behaviour", None, "The model has no behaviour head (model.behaviour); behaviour is "
                                "only decoded by ridge regression from posterior latent paths.",
                                behaviour_table(metrics)))
    if "behaviour_decoding" in metrics:
        sections.append(Section(
            "Behaviour calibration",
            plots.plot_calibration(metrics["behaviour_decoding"], figures / "behaviour_calibration.png"),
            "Fraction of test behaviour values inside each decoder's central predictive interval against the "
            "interval's nominal level, pooled over variables. A calibrated decoder lies on the diagonal; below it "
            "the intervals are too narrow.",
        ))
    return sections


BEHAVIOUR_COLUMNS = (
    ("head, posterior paths", ("behaviour_r_squared", "posterior")),
    ("head, prior paths", ("behaviour_r_squared", "prediction")),
    ("ridge, posterior paths", ("behaviour_decoding", "ridge", "r_squared")),
)


def _lookup(metrics: dict, keys: tuple) -> dict:
    for key in keys:
        metrics = metrics.get(key) if isinstance(metrics, dict) else None
    return metrics if isinstance(metrics, dict) else {}


def behaviour_table(metrics: dict) -> str:
    """Render the held-out behaviour R^2 per variable and the interval coverage of each decoder as HTML."""
    decoding = metrics.get("behaviour_decoding") or {}
    columns = [(title, _lookup(metrics, keys)) for title, keys in BEHAVIOUR_COLUMNS]
    columns = [(title, scores) for title, scores in columns if scores]
    if not columns:
        return "<p>metrics.json has no behaviour scores; run <code>neuroude evaluate RUN_DIR</code> to write them.</p>"
    names = list(decoding.get("names") or [name for name in columns[0][1] if name != "mean"]) + ["mean"]

    lines = ["<table><tr><th>variable</th>" + "".join(f"<th>R^2, {html.escape(title)}</th>" for title, _ in columns)
             + "</tr>"]
    for name in names:
        cells = "".join(f"<td>{_number(scores.get(name))}</td>" for _, scores in columns)
        lines.append(f"<tr><td>{html.escape(str(name))}</td>{cells}</tr>")
    lines.append("</table>")

    decoders = [(label, decoding[method]) for method, label in (("behaviour_head", "behaviour head"),
                                                                   ("ridge", "ridge")) if method in decoding]
    if decoders:
        levels = sorted(decoders[0][1].get("coverage", {}), key=float)
        lines.append("<table><tr><th>decoder</th>"
                     + "".join(f"<th>coverage of the {100 * float(level):g}% interval</th>" for level in levels)
                     + "</tr>")
        for label, scores in decoders:
            cells = "".join(f"<td>{_number(scores['coverage'].get(level))}</td>" for level in levels)
            lines.append(f"<tr><td>{label}</td>{cells}</tr>")
        lines.append("</table>")
    lines.append(
        "<p>R^2 on the test trials, per behaviour variable. <em>Head, posterior paths</em>: the jointly fitted "
        "behaviour head applied to latent paths sampled from the posterior given the trial's neural data, so it "
        "measures how well the fitted latent decodes behaviour from the recording. <em>Head, prior paths</em>: the "
        "head on paths sampled from the prior SDE from the inferred initial state and the stimulus, the paths of "
        "the neural predictions. <em>Ridge, posterior paths</em>: a ridge regression from the same kind of posterior "
        "paths to behaviour, fitted on the training trials; it shows how much behaviour the latent carries "
        "whatever the head learned. Coverage is the fraction of test values inside the central predictive "
        "interval, pooled over variables; a calibrated decoder gives the nominal level.</p>"
    )
    return "\n".join(lines)


# -- HTML ---------------------------------------------------------------------


def _data_uri(path: Path) -> str:
    mime = IMAGE_TYPES[path.suffix.lower()]
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _figure_html(section: Section) -> str:
    caption = section.caption
    parts = [f"<h2>{html.escape(section.title)}</h2>"]
    if section.figure is not None:
        alt = html.escape(f"{section.title} ({section.figure.name})")
        parts.append(f'<figure><img src="{_data_uri(section.figure)}" alt="{alt}">'
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    else:
        parts.append(f"<p>{html.escape(caption)}</p>")
    parts.append(section.extra_html)
    return "\n".join(parts)


def _number(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _constants_table(rows: list[dict], identifiability: dict | None = None) -> str:
    classes = (identifiability or {}).get("constants", {})
    header = "<th>identifiability</th><th>relative std</th>" if classes else ""
    lines = ["<table><tr><th>constant</th><th>default</th><th>initial</th><th>fitted</th><th>learnable</th>"
             f"{header}</tr>"]
    for row in rows:
        cells = [row["name"], row["default"], *(_vector_text(row[key]) for key in ("initial", "fitted")),
                 "yes" if row["learnable"] else "no (frozen)"]
        if classes:
            # The Laplace names drop the grey-box wrapper's "mechanistic." prefix.
            entry = classes.get(row["name"].removeprefix("mechanistic."))
            cells += ["n/a", None] if entry is None else [entry["status"], entry["relative_std"]]
        lines.append("<tr>" + "".join(f"<td>{_number(cell)}</td>" for cell in cells) + "</tr>")
    return "\n".join(lines) + "</table>"


def _vector_text(value) -> str | float:
    array = np.asarray(value)
    if array.size == 1:
        return float(array)
    return f"{array.size} values, mean {array.mean():.4g}"


def metrics_table(metrics: dict | None) -> str:
    """Render the validation and test scores of `metrics.json`, the model beside each baseline, as HTML."""
    if not metrics:
        return "<p>metrics.json is missing; run <code>neuroude evaluate RUN_DIR</code> to write it.</p>"
    columns = sorted({name for split in ("validation", "test") for scores in metrics.get(split, {}).values()
                      for name in scores})
    lines = ["<table><tr><th>split</th><th>predictor</th>"
             + "".join(f"<th>{html.escape(name.replace('_', ' '))}</th>" for name in columns) + "</tr>"]
    for split in ("validation", "test"):
        for predictor, scores in metrics.get(split, {}).items():
            row_class = ' class="model"' if predictor == "model" else ""
            cells = "".join(f"<td>{_number(scores.get(name))}</td>" for name in columns)
            lines.append(f"<tr{row_class}><td>{split}</td><td>{html.escape(predictor)}</td>{cells}</tr>")
    lines.append("</table>")
    training = metrics.get("training")
    if training:
        items = ", ".join(f"{html.escape(key.replace('_', ' '))}: {_number(value)}" for key, value in training.items())
        lines.append(f"<p>Training: {items}.</p>")
    lines.append(f"<p>The first {_number(metrics.get('skip_bins'))} bins of each held-out trial are not scored; "
                 "n/a marks a score that could not be computed (non-finite predictions).</p>")
    return "\n".join(lines)


def other_figures(figures: Path) -> list[Path]:
    """Return the images in `figures` that the report does not draw itself, sorted by name."""
    if not figures.is_dir():
        return []
    drawn = REPORT_FIGURES + BEHAVIOUR_FIGURES
    return sorted(path for path in figures.iterdir()
                  if path.suffix.lower() in IMAGE_TYPES and path.name not in drawn and path.is_file())


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; margin-top: 2em; }
img { max-width: 100%; height: auto; } figcaption, .note { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
td:first-child, td:nth-child(2), th { text-align: left; } tr.model { font-weight: bold; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def render_html(run: Run, sections: list[Section], others: list[Path]) -> str:
    """Assemble the report page from its sections, the metrics table and the summaries."""
    title = f"neuroude run {run.folder.root.resolve().name}"
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="note">Folder {html.escape(str(run.folder.root.resolve()))}, report written {created}.</p>',
        "<h2>Summary</h2>",
        f"<pre>{html.escape(run.recording.summary())}</pre>",
        f"<pre>{html.escape(describe_model(run.model))}</pre>",
        "<h2>Held-out metrics</h2>",
        metrics_table(run.metrics),
    ]
    body.extend(_figure_html(section) for section in sections)
    if others:
        body.append("<h2>Other figures</h2>")
        for path in others:
            body.append(f'<figure><img src="{_data_uri(path)}" alt="{html.escape(path.name)}">'
                        f"<figcaption>{html.escape(path.name)}</figcaption></figure>")
    body.append("<h2>Configuration</h2>")
    body.append(f"<pre>{html.escape(describe_config(run.config, run.model))}</pre>")
    body.append(f"<details><summary>config.yaml</summary><pre>{html.escape(dump_config(run.config))}</pre></details>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(body) + "\n</body></html>\n"
    )


def write_report(path: str | os.PathLike, checkpoint_name: str = "best") -> Path:
    """Draw the figures of a fitted run into `RUN_DIR/figures` and write `RUN_DIR/report.html`.

    Raises DataFileError when `path` is not a fitted run folder. Returns the path of the page.
    """
    run = load_run(path, checkpoint_name)
    figures = run.folder.figures
    figures.mkdir(parents=True, exist_ok=True)
    logger.info("writing the report of %s", run.folder.root)

    sections = [Section(
        "Data", report_plots.plot_data_overview(run.recording, figures / "data_overview.png",
                                                run.config.model.observation),
        "The first trials of the recording: "
        + ("the stimulus and " if run.recording.u is not None else "")
        + "the recorded "
        + ("spike counts per bin." if run.config.model.observation == "poisson" else "traces."),
    )]
    sections.append(_training_section(run, figures))
    sections.extend(_prediction_sections(run, figures))
    sections.append(_initial_state_section(run, figures))
    sections.extend(_behaviour_sections(run, figures))
    constants = _constants_section(run, figures)
    if constants is not None:
        sections.append(constants)

    target = run.folder.root / REPORT_NAME
    write_text(target, render_html(run, sections, other_figures(figures)))
    logger.info("report written to %s", target)
    return target
