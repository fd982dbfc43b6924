"""The run report, the summaries and the spikes-with-stimulus tutorial, on one tiny fitted run.

The module-scoped fixture runs the tutorial script with tiny networks and two
training steps on the packaged receptor-neuron recording, with a
FitzHugh-Nagumo drift so that the report has mechanistic constants to show.
"""

import base64
import csv
import html.parser
import importlib.util
import json
import logging
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

import neuroude as nu
from neuroude import report, tensorboard
from neuroude.cli import main
from neuroude.config import TrainingConfig
from neuroude.runs import RunFolder
from neuroude.summary import count_parameters, describe_config
from neuroude.tensorboard import open_tensorboard
from neuroude.train import learning_rate_schedule

from conftest import tiny_config, tiny_recording

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "examples" / "fit_spikes_with_stimulus.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def load_tutorial():
    spec = importlib.util.spec_from_file_location("fit_spikes_with_stimulus", TUTORIAL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report") / "run"
    page = load_tutorial().main(["--out", str(folder), "--steps", "2", "--small", "--drift", "fitzhugh_nagumo"])
    assert page == folder / "report.html"
    return folder


class ImageCollector(html.parser.HTMLParser):
    """Collects the attributes of <img>, <script>, <link> and <iframe> tags of a page."""

    def __init__(self):
        super().__init__()
        self.images, self.external = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        if tag in ("script", "link", "iframe", "object", "embed"):
            self.external.append((tag, attrs))


def parse_page(path: Path) -> ImageCollector:
    collector = ImageCollector()
    collector.feed(path.read_text())
    return collector


def test_tutorial_writes_report_and_figures(run_dir):
    assert (run_dir / "report.html").is_file()
    for name in report.REPORT_FIGURES:
        figure = run_dir / "figures" / name
        assert figure.is_file(), name
        assert figure.read_bytes()[:8] == PNG_SIGNATURE, name


def test_report_embeds_figures_offline(run_dir):
    page = parse_page(run_dir / "report.html")
    assert page.external == []
    assert len(page.images) == len(report.REPORT_FIGURES)
    for image in page.images:
        prefix = "data:image/png;base64,"
        assert image["src"].startswith(prefix), image["src"][:40]
        assert base64.b64decode(image["src"][len(prefix):])[:8] == PNG_SIGNATURE
    text = (run_dir / "report.html").read_text()
    assert "http://" not in text
    assert "https://" not in text


def test_report_lists_metrics_and_constants(run_dir):
    text = (run_dir / "report.html").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for predictor in metrics["test"]:
        assert f"<td>{predictor}</td>" in text, predictor
    model_score = metrics["test"]["model"]["bits_per_spike"]
    assert f"{model_score:.4g}" in text
    for constant in ("a", "b", "tau", "time_scale", "i_ext"):
        assert f"<td>{constant}</td>" in text, constant
    assert "Other figures" not in text


def test_report_command_adds_other_figures(run_dir, capsys):
    # A figure written by another command (an analysis, say) appears under "Other figures".
    shutil.copy(run_dir / "figures" / "constants.png", run_dir / "figures" / "phase_portrait.png")
    try:
        assert main(["report", str(run_dir)]) == 0
        assert capsys.readouterr().out.strip() == str(run_dir / "report.html")
        page = parse_page(run_dir / "report.html")
        assert len(page.images) == len(report.REPORT_FIGURES) + 1
        assert "phase_portrait.png" in [image["alt"] for image in page.images]
        assert "<h2>Other figures</h2>" in (run_dir / "report.html").read_text()
    finally:
        (run_dir / "figures" / "phase_portrait.png").unlink()


def test_report_of_gaussian_ode_run(tmp_path, monkeypatch):
    # The fit also logs to a stand-in TensorBoard writer, as it would with tensorboardX installed.
    writers = []

    def make_writer(log_dir):
        writers.append(RecordingWriter(log_dir))
        return writers[-1]

    monkeypatch.setattr(tensorboard, "find_summary_writer", lambda: make_writer)
    rng = np.random.default_rng(0)
    recording = nu.Recording(y=rng.normal(size=(10, 12, 3)), ts=np.arange(12) * 0.01, u=rng.normal(size=(10, 12, 1)))
    nu.save_npz(recording, tmp_path / "traces.npz")
    config = tiny_config(data={"source": "npz", "path": str(tmp_path / "traces.npz")},
                         model={"observation": "gaussian", "diffusion": "none"}, training={"steps": 2})
    nu.fit_run(config, tmp_path / "run", quiet=True)
    assert len(writers) == 1
    assert writers[0].closed
    steps_with_loss = [step for tag, _, step in writers[0].scalars if tag == "elbo/negative_elbo"]
    assert steps_with_loss == [1, 2]

    page = report.write_report(tmp_path / "run")
    text = page.read_text()
    assert "it has no diffusion" in text
    assert "<th>r squared</th>" in text
    assert not (tmp_path / "run" / "figures" / "diffusion.png").exists()
    assert not (tmp_path / "run" / "figures" / "constants.png").exists()
    assert len(parse_page(page).images) == len(report.REPORT_FIGURES) - 2


def test_report_of_missing_run(tmp_path, capsys):
    assert main(["report", str(tmp_path / "absent")]) == 2
    assert "not found" in capsys.readouterr().err


def test_history_records_learning_rate_and_skips(run_dir):
    with open(run_dir / "history.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    config = nu.load_config(run_dir / "config.yaml")
    schedule = learning_rate_schedule(config.training)
    assert [int(row["step"]) for row in rows] == [1, 2]
    for row in rows:
        # The update of step s (from 1) uses the schedule's value at update count s - 1.
        assert float(row["learning_rate"]) == pytest.approx(float(schedule(int(row["step"]) - 1)))
        assert row["skipped_steps"] == "0"
    assert rows[0]["validation_metric"] == ""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert np.isfinite(float(rows[1]["validation_metric"]))
    assert metrics["training"]["steps_run"] == 2


def test_read_history_fills_missing_values(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("step,loss,finite,validation_metric\n1,2.5,True,\n2,2.0,False,0.1\n")
    history = report.read_history(path)
    np.testing.assert_array_equal(history["step"], [1, 2])
    np.testing.assert_array_equal(history["finite"], [1.0, 0.0])
    assert np.isnan(history["validation_metric"][0])
    assert history["validation_metric"][1] == 0.1
    assert report.read_history(tmp_path / "absent.csv") is None


def test_learning_rate_schedule_shape():
    training = TrainingConfig(steps=100, warmup_steps=10, learning_rate=0.01, lr_schedule="cosine")
    schedule = learning_rate_schedule(training)
    assert float(schedule(0)) == 0.0
    assert float(schedule(10)) == pytest.approx(0.01)
    assert float(schedule(100)) == pytest.approx(0.01 * 0.05)


@pytest.mark.skipif(not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
                    reason="headless browser test needs /usr/bin/chromium and /usr/bin/chromedriver "
                           "(Debian packages chromium and chromium-driver)")
def test_report_renders_in_headless_chromium(run_dir):
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.get((run_dir / "report.html").resolve().as_uri())
        widths = driver.execute_script(
            "return Array.from(document.images).map(image => image.complete ? image.naturalWidth : 0);"
        )
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    finally:
        driver.quit()
    assert len(widths) == len(parse_page(run_dir / "report.html").images)
    assert all(width > 0 for width in widths), widths
    assert errors == []


def test_load_run_returns_model_config_metrics(run_dir):
    run = nu.load_run(run_dir)
    assert isinstance(run.model, nu.LatentUDE)
    assert run.config.model.drift == "fitzhugh_nagumo"
    assert run.metrics["observation"] == "poisson"
    assert str(run_dir) in repr(run)
    summary = run.summary()
    assert "glm_stimulus" in summary
    assert "12 train, 4 validation, 4 test" in summary
    assert run._repr_html_().startswith("<pre>")


def test_model_summary_counts_parameters(run_dir):
    model = nu.load_run(run_dir).model
    total, trainable = count_parameters(model)
    leaves = [leaf for leaf in jax.tree_util.tree_leaves(model) if hasattr(leaf, "dtype")]
    assert total == sum(leaf.size for leaf in leaves if np.issubdtype(leaf.dtype, np.floating))
    assert trainable == total
    summary = model.summary()
    assert f"{total} parameters" in summary
    assert "white box (mechanistic FitzHughNagumo)" in summary
    module_counts = [int(line.split()[2]) for line in summary.splitlines() if line.startswith("    ")
                     and line.split()[0] in ("encoder", "recognition", "sde.drift", "sde.diffusion", "correction",
                                             "observation")]
    assert sum(module_counts) == total
    assert repr(model) == (
        "LatentUDE(latent_size=2, drift=FitzHughNagumo, diffusion=AdditiveDiffusion, "
        f"observation=PoissonObservation, parameters={total})"
    )


def test_frozen_constants_not_trainable(make_model):
    model = make_model(tiny_config(model={"drift": "fitzhugh_nagumo", "frozen_constants": ["a", "b"]}))
    total, trainable = count_parameters(model)
    assert total - trainable == 2
    summary = model.summary()
    assert "frozen" in summary
    assert "black box" not in summary


def test_constant_rows_against_defaults(make_model):
    config = tiny_config(model={"drift": "fitzhugh_nagumo", "constants": {"tau": 10.0}})
    model = make_model(config)
    rows = {row["name"]: row for row in report.constant_rows(model, model)}
    assert rows["tau"]["default"] == 12.5
    assert float(rows["tau"]["initial"]) == pytest.approx(10.0)
    assert float(rows["a"]["fitted"]) == pytest.approx(0.7)
    assert rows["a"]["learnable"]


def test_additive_diffusion_grid_is_constant(make_model):
    model = make_model(tiny_config(model={"diffusion_scale": 0.25}))
    paths = np.random.default_rng(0).normal(size=(3, 12, 2))
    grid = report.diffusion_grid(model, paths, np.zeros(2, np.float32), n_points=5)
    assert grid["sigma"].shape == (5, 5, 2)
    np.testing.assert_allclose(grid["sigma"], 0.25, rtol=1e-5)
    assert grid["axes"][0][0] < paths[..., 0].min()
    assert grid["axes"][0][-1] > paths[..., 0].max()


def test_condition_labels_prefer_condition():
    recording = nu.Recording(
        y=np.zeros((4, 5, 1)), ts=np.arange(5) * 0.1,
        metadata={"trial_info": {"block": [0, 1, 2, 3], "condition": ["left", "right", "left", "right"]}},
    )
    labels, grouping = report.condition_labels(recording)
    assert grouping == "condition"
    assert labels == ["condition left", "condition right", "condition left", "condition right"]
    plain = nu.Recording(y=np.zeros((2, 5, 1)), ts=np.arange(5) * 0.1)
    assert report.condition_labels(plain) == (["trial 0", "trial 1"], "trial")


def test_config_summary_names_choices():
    summary = tiny_config(model={"drift": "fitzhugh_nagumo", "residual": True}).summary()
    assert "drift fitzhugh_nagumo + residual network" in summary
    assert "6 steps" in summary
    assert "mlp encoder (identity when the recording has no stimulus)" in summary


def test_summaries_name_built_encoder(make_model):
    # The configured encoder is mlp, but a recording without a stimulus gets the identity encoder.
    config = tiny_config()
    without_stimulus = make_model(config, tiny_recording(n_inputs=0))
    config_summary = describe_config(config, without_stimulus)
    assert "identity encoder (the recording has no stimulus)" in config_summary
    assert "mlp encoder" not in config_summary
    assert "stimulus: identity encoder (the recording has no stimulus)" in without_stimulus.summary()

    with_stimulus = make_model(config, tiny_recording(n_inputs=3))
    assert "mlp encoder from 3 stimulus channels to 2 drive channels" in describe_config(config, with_stimulus)

    identity_config = tiny_config(model={"encoder": "identity"})
    identity = make_model(identity_config, tiny_recording(n_inputs=1))
    assert "identity encoder (the drive is the stimulus itself, 1 channel)" in describe_config(identity_config, identity)


class RecordingWriter:
    """Stands in for a TensorBoard SummaryWriter and records its calls."""

    def __init__(self, log_dir):
        self.log_dir, self.scalars, self.closed = log_dir, [], False

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def close(self):
        self.closed = True


def test_tensorboard_writer_receives_scalars(tmp_path):
    writers = []

    def make_writer(log_dir):
        writers.append(RecordingWriter(log_dir))
        return writers[-1]

    with open_tensorboard(RunFolder(tmp_path), make_writer) as board:
        board.write({"step": 1, "loss": 3.0, "kl_path": 0.5, "validation_metric": None})
        board.write({"step": 2, "loss": float("nan"), "validation_metric": 0.2})
    writer = writers[0]
    assert writer.log_dir == str(tmp_path / "tensorboard")
    assert writer.scalars == [
        ("elbo/negative_elbo", 3.0, 1), ("elbo/kl_path", 0.5, 1), ("validation/metric", 0.2, 2),
    ]
    assert writer.closed


def test_log_level_option(capsys):
    assert main(["--log-level", "debug", "models"]) == 0
    handlers = [h for h in logging.getLogger("neuroude").handlers if getattr(h, "is_terminal_handler", False)]
    assert [handler.level for handler in handlers] == [logging.DEBUG]
    assert logging.getLogger("neuroude").level == logging.DEBUG
    with pytest.raises(SystemExit):
        main(["--log-level", "loud", "models"])
    assert "invalid choice: 'loud'" in capsys.readouterr().err
    main(["models"])
    assert logging.getLogger("neuroude").level == logging.INFO
