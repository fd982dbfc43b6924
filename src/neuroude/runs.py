"""Run folders and atomic files.

A run folder contains `config.yaml`, `metrics.json`, `history.csv`,
`checkpoints/{best,last}.eqx`, `figures/` and `log.txt`, and after
`neuroude report` also `report.html`. Every file is written
to a temporary name in the same folder and renamed, so a crash leaves either
the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import equinox as eqx

from .errors import DataFileError, RunFolderError

CHECKPOINT_MAGIC = b"neuroude-checkpoint 1\n"


def _umask() -> int:
    # The umask can only be read by setting it, so set it back at once.
    current = os.umask(0)
    os.umask(current)
    return current


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside `path`; on success flush it to disk and rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, mode) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        # mkstemp creates the file readable by its owner only; give it the permissions a plain open() would.
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as stream:
        stream.write(text)


def _strict_json_value(value):
    # JSON has no NaN or infinity; a score that could not be computed is written as null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _strict_json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json_value(item) for item in value]
    return value


def write_json(path: str | os.PathLike, value) -> None:
    """Write `value` as strict JSON, with NaN and infinities as null."""
    write_text(path, json.dumps(_strict_json_value(value), indent=2, allow_nan=False) + "\n")


def save_checkpoint(path: str | os.PathLike, state: dict, tree) -> None:
    """Write a JSON header of fit state followed by the serialised arrays of `tree`."""
    header = json.dumps(state).encode()
    with atomic_open(path, "wb") as stream:
        stream.write(CHECKPOINT_MAGIC)
        stream.write(header + b"\n")
        eqx.tree_serialise_leaves(stream, tree)


def load_checkpoint(path: str | os.PathLike, like) -> tuple[dict, object]:
    """Read a checkpoint written by `save_checkpoint`; `like` is a PyTree of the same structure."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"checkpoint {path} not found")
    try:
        with open(path, "rb") as stream:
            if stream.readline() != CHECKPOINT_MAGIC:
                raise DataFileError(f"{path} is not a neuroude checkpoint (its first line is not the expected header)")
            state = json.loads(stream.readline())
            tree = eqx.tree_deserialise_leaves(stream, like)
    except DataFileError:
        raise
    except (ValueError, RuntimeError, OSError, EOFError) as error:
        raise DataFileError(
            f"checkpoint {path} is corrupt or was written for a different model configuration: {error}"
        ) from None
    return state, tree


class RunFolder:
    """Paths of one run's outputs."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    config = property(lambda self: self.root / "config.yaml")
    metrics = property(lambda self: self.root / "metrics.json")
    history = property(lambda self: self.root / "history.csv")
    log = property(lambda self: self.root / "log.txt")
    checkpoints = property(lambda self: self.root / "checkpoints")
    figures = property(lambda self: self.root / "figures")
    last_checkpoint = property(lambda self: self.root / "checkpoints" / "last.eqx")
    best_checkpoint = property(lambda self: self.root / "checkpoints" / "best.eqx")

    def holds_run(self) -> bool:
        return self.config.is_file() or self.last_checkpoint.is_file() or self.best_checkpoint.is_file()

    def require_resumable(self) -> None:
        """Raise unless the folder contains a configuration and a last checkpoint to continue from."""
        if not self.last_checkpoint.is_file() or not self.config.is_file():
            raise DataFileError(
                f"cannot resume: {self.last_checkpoint} or {self.config} not found; start a new fit without --resume"
            )

    def check_writable(self, resume: bool, overwrite: bool) -> None:
        """Raise unless a fit may write here: a new folder, a run to resume, or a run to overwrite.

        A folder that already contains a run is never reused silently: resuming
        needs `resume`, starting over needs `overwrite`.
        """
        if self.root.exists() and not self.root.is_dir():
            raise RunFolderError(f"run folder {self.root} is a file; expected a directory or a new path")
        if resume:
            self.require_resumable()
        elif self.holds_run() and not overwrite:
            raise RunFolderError(
                f"run folder {self.root} already contains a run; resume it (--resume, or resume=True in fit_run), "
                "replace it (--overwrite, or overwrite=True), or choose another output folder"
            )

    def prepare(self, resume: bool, overwrite: bool) -> None:
        """Check the folder with `check_writable`, then create it or clear the outputs of the run it replaces."""
        self.check_writable(resume, overwrite)
        if resume:
            return
        if self.holds_run():
            for stale in (self.last_checkpoint, self.best_checkpoint, self.metrics, self.history, self.log):
                stale.unlink(missing_ok=True)
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        self.figures.mkdir(parents=True, exist_ok=True)

    def require_fitted(self) -> None:
        """Raise unless the folder contains a configuration and a checkpoint."""
        if not self.root.is_dir():
            raise DataFileError(f"run folder {self.root} not found")
        if not self.config.is_file():
            raise DataFileError(f"{self.config} not found; {self.root} is not a neuroude run folder")
        if not (self.best_checkpoint.is_file() or self.last_checkpoint.is_file()):
            raise DataFileError(f"no checkpoint in {self.checkpoints}; the fit has not written one yet")
