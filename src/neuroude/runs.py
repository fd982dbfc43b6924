"""Run folders and atomic files.

A run folder contains `config.yaml`, `metrics.json`, `history.csv`,
`checkpoints/{best,last}.eqx`, `figures/` and `log.txt`, and after
`neuroude report` also `report.html`. Every file is written
to a temporary name in the same folder and renamed, so a crash leaves either
the old file or the new one, never half of one. A write that fails because the
disk is full or the folder is not writable raises `RunFolderError` naming the
file, and the file it would have replaced stays as it was.

A checkpoint is three parts: a magic line, one line of JSON with the fit state
and the SHA-256 digest of the rest, then the serialised arrays. The digest
covers the fit state (as JSON) and the array bytes, so any altered byte
is detected when the checkpoint is read.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import equinox as eqx

from .errors import DataFileError, RunFolderError

logger = logging.getLogger("neuroude")

CHECKPOINT_MAGIC = b"neuroude-checkpoint 2\n"
# Checkpoints written before digests were stored; they are read without a check.
UNCHECKED_MAGIC = b"neuroude-checkpoint 1\n"
DIGEST_KEY = "sha256"

# Write failures that the user fixes by freeing space or choosing another folder, not by a bug report.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG}


def storage_error(path: str | os.PathLike, error: OSError) -> RunFolderError:
    """Return the RunFolderError for a failed write of `path`: what failed, why, and what to do."""
    reason = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EFBIG: "the file is larger than the file system allows",
        errno.EROFS: "the file system is read-only",
    }.get(error.errno, "permission denied")
    return RunFolderError(
        f"could not write {path}: {reason} ({os.strerror(error.errno)}); any earlier version of the file was kept. "
        "Free space or fix the folder's permissions, then continue with --resume, or choose another output folder."
    )


def _umask() -> int:
    # The umask can only be read by setting it, so set it back at once.
    current = os.umask(0)
    os.umask(current)
    return current


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside `path`; on success flush it to disk and rename it onto `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        if error.errno in _STORAGE_ERRNOS:
            raise storage_error(path, error) from error
        raise
    try:
        with os.fdopen(handle, mode) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        # mkstemp creates the file readable by its owner only; give it the permissions a plain open() would.
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        if isinstance(error, OSError) and error.errno in _STORAGE_ERRNOS:
            raise storage_error(path, error) from error
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


def _digest(state_json: bytes, payload: bytes) -> str:
    return hashlib.sha256(state_json + b"\n" + payload).hexdigest()


def _state_json(state: dict) -> bytes:
    # Key order is kept (JSON objects load in file order), so the history rows keep their column order.
    return json.dumps(state).encode()


def save_checkpoint(path: str | os.PathLike, state: dict, tree) -> None:
    """Write a JSON header of fit state and digest, followed by the serialised arrays of `tree`."""
    if DIGEST_KEY in state:
        raise ValueError(f"the fit state must not contain the key {DIGEST_KEY!r}; it is reserved for the digest")
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, tree)
    payload = buffer.getvalue()
    header = {**state, DIGEST_KEY: _digest(_state_json(state), payload)}

    with atomic_open(path, "wb") as stream:
        stream.write(CHECKPOINT_MAGIC)
        stream.write(json.dumps(header).encode() + b"\n")
        stream.write(payload)


def load_checkpoint(path: str | os.PathLike, like) -> tuple[dict, object]:
    """Read a checkpoint written by `save_checkpoint`; `like` is a PyTree of the same structure.

    Raises DataFileError when the file is missing, not a checkpoint, altered
    since it was written (its SHA-256 digest differs), or contains arrays of
    another structure.
    """
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"checkpoint {path} not found; expected a file written by a fit")
    if not path.is_file():
        raise DataFileError(f"checkpoint {path} is a directory; expected a checkpoint file")
    try:
        with open(path, "rb") as stream:
            magic = stream.readline()
            header_line = stream.readline()
            payload = stream.read()
    except OSError as error:
        raise DataFileError(f"checkpoint {path} could not be read: {error.strerror}") from None

    if magic not in (CHECKPOINT_MAGIC, UNCHECKED_MAGIC):
        raise DataFileError(f"{path} is not a neuroude checkpoint (its first line is not the expected header)")
    try:
        state = json.loads(header_line)
    except ValueError as error:
        raise DataFileError(f"checkpoint {path} is corrupt: its header is not valid JSON ({error})") from None
    if not isinstance(state, dict):
        raise DataFileError(f"checkpoint {path} is corrupt: its header is a {type(state).__name__}; expected an object")

    if magic == CHECKPOINT_MAGIC:
        _verify_digest(path, state, payload)
    else:
        logger.warning("checkpoint %s was written without a digest and cannot be checked for damage", path)

    try:
        tree = eqx.tree_deserialise_leaves(io.BytesIO(payload), like)
    except (ValueError, RuntimeError, OSError, EOFError) as error:
        raise DataFileError(
            f"checkpoint {path} is corrupt or was written for a different model configuration: {error}"
        ) from None
    return state, tree


def _verify_digest(path: Path, state: dict, payload: bytes) -> None:
    stored = state.pop(DIGEST_KEY, None)
    if not isinstance(stored, str):
        raise DataFileError(f"checkpoint {path} is corrupt: its header has no {DIGEST_KEY} digest")
    actual = _digest(_state_json(state), payload)
    if actual != stored:
        raise DataFileError(
            f"checkpoint {path} is corrupt: its SHA-256 digest is {actual}, expected {stored} as stored when it was "
            "written. The file was altered or damaged; resume from another copy or start the fit again."
        )


def _probe_writable(folder: Path) -> None:
    # Creating and deleting a file is the only reliable test: os.access ignores read-only mounts and ACLs.
    try:
        handle, probe = tempfile.mkstemp(prefix=".write-test.", suffix=".tmp", dir=folder)
    except OSError as error:
        if error.errno in _STORAGE_ERRNOS:
            raise storage_error(folder, error) from error
        raise
    os.close(handle)
    os.unlink(probe)


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
        """Return whether the folder contains a checkpoint or a finished fit's metrics, which a new fit would lose.

        A fit interrupted before it saved a checkpoint leaves only config.yaml and log.txt behind,
        which a new fit may replace without --overwrite. Metrics count too, so that a run whose
        checkpoints were deleted to save space is not replaced silently.
        """
        return self.last_checkpoint.is_file() or self.best_checkpoint.is_file() or self.metrics.is_file()

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
        """Check the folder with `check_writable`, then create it or clear the outputs of the run it replaces.

        Raises RunFolderError naming the folder when it cannot be written, for
        example when it is read-only or the disk is full, before any fitting.
        """
        self.check_writable(resume, overwrite)
        try:
            if resume:
                self.remove_stale_temporaries()
            elif self.holds_run() or self.config.is_file():
                for stale in (self.last_checkpoint, self.best_checkpoint, self.metrics, self.history, self.log):
                    stale.unlink(missing_ok=True)
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            self.figures.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            if error.errno in _STORAGE_ERRNOS:
                raise storage_error(error.filename or self.root, error) from error
            raise
        for folder in (self.root, self.checkpoints, self.figures):
            _probe_writable(folder)

    def remove_stale_temporaries(self) -> None:
        """Delete temporary files that a killed process left behind before it could rename them."""
        for folder in (self.root, self.checkpoints, self.figures):
            for temporary in folder.glob(".*.tmp"):
                logger.info("removing %s, left by an interrupted write", temporary)
                temporary.unlink(missing_ok=True)

    def require_fitted(self) -> None:
        """Raise unless the folder contains a configuration and a checkpoint."""
        if not self.root.is_dir():
            raise DataFileError(f"run folder {self.root} not found; expected a folder written by `neuroude fit`")
        if not self.config.is_file():
            raise DataFileError(f"{self.config} not found; {self.root} is not a neuroude run folder")
        if not (self.best_checkpoint.is_file() or self.last_checkpoint.is_file()):
            raise DataFileError(f"no checkpoint in {self.checkpoints}; the fit has not written one yet")
