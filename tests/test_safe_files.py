"""Safe files: no pickle anywhere in the package, config paths resolved beside the config, and a run
that writes only inside its output folder."""

import re
from pathlib import Path

import pytest
import yaml

from conftest import tiny_config, tiny_recording
from neuroude.config import load_config
from neuroude.data import save_npz
from neuroude.workflow import fit_run

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "neuroude"

# Each pattern matches a way to run code stored in a file.
UNSAFE_PATTERNS = {
    "allow_pickle=True": re.compile(r"allow_pickle\s*=\s*True"),
    "pickle-like import": re.compile(r"^\s*(?:import|from)\s+(?:pickle|cPickle|_pickle|dill|cloudpickle|shelve|marshal)\b",
                                     re.MULTILINE),
    "yaml.load without SafeLoader": re.compile(r"yaml\.load\((?![^)]*Loader\s*=\s*yaml\.(?:C?SafeLoader))"),
    "unsafe yaml loader": re.compile(r"yaml\.(?:unsafe_load|full_load|load_all|UnsafeLoader|FullLoader)\b"),
    "np.load without allow_pickle=False": re.compile(r"np\.load\((?![^)]*allow_pickle\s*=\s*False)"),
    "torch.load": re.compile(r"torch\.load\("),
}


def unsafe_uses(text: str) -> list[str]:
    return [name for name, pattern in UNSAFE_PATTERNS.items() if pattern.search(text)]


@pytest.mark.parametrize(
    "line",
    [
        "np.load(path, allow_pickle=True)",
        "import pickle",
        "from dill import loads",
        "config = yaml.load(text)",
        "config = yaml.load(text, Loader=yaml.Loader)",
        "yaml.unsafe_load(text)",
        "np.load(path)",
    ],
)
def test_unsafe_pattern_detected(line):
    assert unsafe_uses(line)


@pytest.mark.parametrize(
    "line", ["yaml.safe_load(text)", "yaml.load(text, Loader=yaml.SafeLoader)", "np.load(path, allow_pickle=False)"]
)
def test_safe_pattern_accepted(line):
    assert unsafe_uses(line) == []


def test_package_source_has_no_pickle():
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 10
    found = {str(path.relative_to(PACKAGE)): unsafe_uses(path.read_text()) for path in sources}
    assert {path: uses for path, uses in found.items() if uses} == {}


def test_config_paths_resolved_beside_config(tmp_path):
    folder = tmp_path / "configs" / "fits"
    folder.mkdir(parents=True)
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"source": "npz", "path": "../../data/tiny.npz"},
        "model": {"drift": "network", "latent_size": 4,
                  "network": {"local": "stuart_landau", "connectivity": "~/../conn.npy"}},
    }))
    config = load_config(path)
    assert config.data.path == str((tmp_path / "data" / "tiny.npz").resolve())
    assert Path(config.model.network.connectivity).is_absolute()
    assert ".." not in Path(config.model.network.connectivity).parts


def snapshot(root: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in root.rglob("*") if path.is_file()}


def test_run_writes_only_inside_output_folder(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    save_npz(tiny_recording(), tmp_path / "data" / "tiny.npz")
    working = tmp_path / "configs" / "work"
    working.mkdir(parents=True)
    monkeypatch.chdir(working)
    config = tiny_config(data={"source": "npz", "path": "../../data/tiny.npz"}, training={"steps": 1})
    config.data.path = str((working / config.data.path).resolve())

    before = snapshot(tmp_path)
    # The output path climbs out of the working folder; the run must stay inside where it resolves to.
    out = Path("..") / ".." / "runs" / "escape"
    fit_run(config, out, quiet=True)
    after = snapshot(tmp_path)

    out_resolved = (working / out).resolve()
    changed = [path for path, stamp in after.items() if before.get(path) != stamp]
    assert changed
    assert [path for path in changed if not path.resolve().is_relative_to(out_resolved)] == []
    assert (out_resolved / "checkpoints" / "last.eqx").is_file()
