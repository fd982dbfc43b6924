"""The documentation site builds without warnings and its generated references match the code."""

import argparse
import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from neuroude.cli import _parser
from neuroude.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
# Tutorial pages after the first, each with the file it includes word for word and a line of that file.
TUTORIAL_SCRIPTS = {
    "tutorials/analysis-and-symbolic-recovery": ("examples/analyze_fitzhugh_nagumo.py", "def analytic_hopf_currents("),
    "tutorials/control": ("examples/control_stuart_landau.py", "def free_amplitude("),
    "tutorials/normative-task": ("examples/normative_flipflop.py", "task = partial(flip_flop, n_bins=n_bins"),
    "tutorials/calcium-imaging": ("examples/calcium_imaging.py", "def calcium_traces("),
    "tutorials/whole-brain-bold": ("examples/whole_brain_hcp.py", "def forecast_r2("),
}


def config_keys(section: type[BaseModel] = RunConfig, prefix: str = "") -> list[str]:
    """List every dotted key of the configuration schema, sections included."""
    keys = []
    for name, field in section.model_fields.items():
        key = f"{prefix}.{name}" if prefix else name
        keys.append(key)
        for candidate in (field.annotation, *getattr(field.annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                keys.extend(config_keys(candidate, key))
    return keys


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("mkdocs", reason="building the docs needs the dev extra (mkdocs, mkdocs-material, mkdocstrings)")
    target = tmp_path_factory.mktemp("docs") / "site"
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), environment.get("PYTHONPATH")]))
    environment["NO_MKDOCS_2_WARNING"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(target)],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return target


def page_text(site: Path, page: str) -> str:
    """Return a built page's text without tags, so highlighted code reads as written."""
    markup = (site / page / "index.html").read_text()
    return html.unescape(re.sub(r"<[^>]+>", "", markup))


def test_site_builds_every_page(site):
    for page in ("", "concepts", "ude-recipe", "tutorials/spikes-with-stimulus", *TUTORIAL_SCRIPTS, "run-report", "gpu-and-clusters", "configuration", "cli",
                 "data-format", "api/workflow", "api/model", "api/data", "api/config", "api/dynamics",
                 "api/observation", "api/report"):
        assert (site / page / "index.html").is_file(), page


def test_config_reference_lists_every_key(site):
    text = page_text(site, "configuration")
    keys = config_keys()
    assert "training.kl_warmup_steps" in keys
    for key in keys:
        assert key in text, key


def test_cli_reference_lists_every_option(site):
    text = page_text(site, "cli")
    parser = _parser()
    assert "--log-level" in text
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    for name, subparser in commands.choices.items():
        assert f"neuroude {name}" in text, name
        for action in subparser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for option in action.option_strings:
                assert option in text, f"{name} {option}"


def test_tutorial_page_includes_script(site):
    text = page_text(site, "tutorials/spikes-with-stimulus")
    script = (ROOT / "examples" / "fit_spikes_with_stimulus.py").read_text()
    assert "def make_config(drift: str, steps: int, small: bool, seed: int)" in script
    assert "def make_config(drift: str, steps: int, small: bool, seed: int)" in text


@pytest.mark.parametrize("page", sorted(TUTORIAL_SCRIPTS))
def test_tutorial_pages_include_scripts(site, page):
    script, line = TUTORIAL_SCRIPTS[page]
    text = page_text(site, page)
    assert line in (ROOT / script).read_text()
    assert line in text


def test_whole_brain_page_includes_config(site):
    text = page_text(site, "tutorials/whole-brain-bold")
    assert "local: stuart_landau" in (ROOT / "configs" / "hcp-whole-brain.yaml").read_text()
    assert "local: stuart_landau" in text


def test_api_pages_render_docstrings(site):
    text = page_text(site, "api/model")
    assert "A latent universal differential equation fitted by variational inference." in text
    assert "Describe the model: its modules with parameter counts" in text
