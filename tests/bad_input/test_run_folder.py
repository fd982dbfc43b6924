"""Bad run folders and checkpoints given to fit_run, load_run and load_checkpoint."""

import jax.numpy as jnp
import pytest

from conftest import tiny_config
from neuroude.errors import ConfigError, DataFileError, RunFolderError
from neuroude.runs import load_checkpoint, save_checkpoint
from neuroude.workflow import fit_run, load_run, read_metrics

from .cases import Case, check

TREE = {"weight": jnp.ones(3), "bias": jnp.zeros(2)}


def fit_into(prepare):
    def action(tmp):
        out = tmp / "run"
        prepare(out)
        return fit_run(tiny_config(), out, quiet=True)

    return action


def existing_run(out):
    (out / "checkpoints").mkdir(parents=True)
    (out / "config.yaml").write_text("seed: 0\n")
    (out / "checkpoints" / "last.eqx").write_bytes(b"neuroude-checkpoint 2\n")


def file_in_place(out):
    out.write_text("results\n")


def resume_empty(tmp):
    (tmp / "run").mkdir()
    return fit_run(tiny_config(), tmp / "run", resume=True, quiet=True)


def load_run_with(files):
    def action(tmp):
        out = tmp / "run"
        (out / "checkpoints").mkdir(parents=True)
        for name, text in files.items():
            (out / name).write_text(text)
        return load_run(out)

    return action


def load_checkpoint_with(transform, like=TREE):
    def action(tmp):
        path = tmp / "last.eqx"
        save_checkpoint(path, {"step": 4}, TREE)
        path.write_bytes(transform(path.read_bytes()))
        return load_checkpoint(path, like)

    return action


def replace_line(index, line):
    def transform(data):
        lines = data.split(b"\n", 2)
        lines[index] = line
        return b"\n".join(lines)

    return transform


def load_checkpoint_directory(tmp):
    (tmp / "last.eqx").mkdir()
    return load_checkpoint(tmp / "last.eqx", TREE)


def load_checkpoint_unreadable(tmp):
    path = tmp / "last.eqx"
    save_checkpoint(path, {"step": 4}, TREE)
    path.chmod(0)
    return load_checkpoint(path, TREE)


def read_metrics_text(text):
    def action(tmp):
        (tmp / "metrics.json").write_text(text)
        return read_metrics(tmp / "metrics.json")

    return action


CASES = [
    Case("run already there", fit_into(existing_run), RunFolderError,
         "run folder", "already contains a run", "--resume", extra=("--overwrite",)),
    Case("run folder is a file", fit_into(file_in_place), RunFolderError,
         "run folder", "is a file", "expected a directory or a new path"),
    Case("resume without checkpoint", resume_empty, DataFileError,
         "cannot resume", "last.eqx or", "start a new fit without --resume"),
    Case("load missing folder", lambda tmp: load_run(tmp / "absent"), DataFileError,
         "run folder", "absent not found", "expected a folder written by `neuroude fit`"),
    Case("load without config", load_run_with({}), DataFileError,
         "config.yaml", "not found", "is not a neuroude run folder"),
    Case("load without checkpoint", load_run_with({"config.yaml": "seed: 0\n"}), DataFileError,
         "no checkpoint in", "checkpoints", "the fit has not written one yet"),
    Case("load corrupt config", load_run_with({"config.yaml": "training: {steps: [\n",
                                               "checkpoints/last.eqx": ""}), ConfigError,
         "config.yaml", "is not valid YAML", "expected"),
    Case("metrics truncated", read_metrics_text('{"test": {"model": '), DataFileError,
         "metrics.json", "could not be read as JSON", "expected the metrics written by `neuroude fit`"),
    Case("metrics a list", read_metrics_text("[1, 2]"), DataFileError,
         "metrics.json", "contains a list", "expected a JSON object of metrics"),
    Case("checkpoint missing", lambda tmp: load_checkpoint(tmp / "last.eqx", TREE), DataFileError,
         "checkpoint", "last.eqx not found", "expected a file written by a fit"),
    Case("checkpoint directory", load_checkpoint_directory, DataFileError,
         "checkpoint", "is a directory", "expected a checkpoint file"),
    Case("checkpoint unreadable", load_checkpoint_unreadable, DataFileError,
         "checkpoint", "Permission denied", "could not be read", needs_permissions=True),
    Case("checkpoint truncated", load_checkpoint_with(lambda data: data[:-7]), DataFileError,
         "checkpoint", "is corrupt: its SHA-256 digest is", "expected"),
    Case("checkpoint bit flipped", load_checkpoint_with(lambda data: data[:-1] + bytes([data[-1] ^ 1])),
         DataFileError, "checkpoint", "is corrupt: its SHA-256 digest is", "expected"),
    Case("checkpoint header altered", load_checkpoint_with(lambda data: data.replace(b'"step": 4', b'"step": 9')),
         DataFileError, "checkpoint", "is corrupt: its SHA-256 digest is", "expected"),
    Case("checkpoint header not JSON", load_checkpoint_with(replace_line(1, b"{step: 4")), DataFileError,
         "checkpoint", "its header is not valid JSON", "Expecting property name"),
    Case("checkpoint header a list", load_checkpoint_with(replace_line(1, b"[4]")), DataFileError,
         "checkpoint", "header is a list", "expected an object"),
    Case("foreign file", load_checkpoint_with(lambda data: b"PK\x03\x04 zip archive\n"), DataFileError,
         "last.eqx", "is not a neuroude checkpoint", "expected header"),
    Case("other model structure", load_checkpoint_with(lambda data: data, like={"weight": jnp.ones(4)}),
         DataFileError, "checkpoint", "written for a different model configuration", "corrupt"),
]


@pytest.mark.parametrize("case", [case.param() for case in CASES])
def test_bad_run_folder_rejected(case, tmp_path):
    check(case, tmp_path)
