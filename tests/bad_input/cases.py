"""The catalogue's case type and its check: each bad input raises one exact error whose message names
the field, the value found and what was expected."""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

RUNNING_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
ROOT_REASON = "runs as root, and root reads files whatever their permissions, so chmod 000 blocks nothing"


@dataclass(frozen=True)
class Case:
    """One bad input.

    `action(tmp_path)` makes the input under `tmp_path` and calls the API on it.
    `error` is the exact exception type, or an int exit code for CLI cases,
    whose message is then the command's standard error. `field`, `found` and
    `expected` are fragments the message must contain.
    """

    id: str
    action: Callable[[Path], object]
    error: type[BaseException] | int
    field: str
    found: str
    expected: str
    needs_permissions: bool = False
    extra: tuple[str, ...] = field(default_factory=tuple)

    @property
    def fragments(self) -> tuple[str, ...]:
        return (self.field, self.found, self.expected, *self.extra)

    def param(self):
        marks = []
        if self.needs_permissions:
            marks.append(pytest.mark.skipif(RUNNING_AS_ROOT, reason=ROOT_REASON))
        return pytest.param(self, id=self.id, marks=marks)


def run_cli(argv: list[str]) -> tuple[int, str]:
    """Run `neuroude` with `argv`; return the exit code and standard error."""
    from neuroude.cli import main

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exit:
            code = exit.code
    return code, stderr.getvalue()


def message_of(case: Case, tmp_path: Path) -> str:
    """Run the case and return the error message shown to the user; fail unless the exact error type is raised."""
    if isinstance(case.error, int):
        code, stderr = case.action(tmp_path)
        assert code == case.error, f"exit code {code}, expected {case.error}; stderr: {stderr}"
        return stderr.strip()
    with pytest.raises(BaseException) as raised:
        case.action(tmp_path)
    assert type(raised.value) is case.error, f"raised {type(raised.value).__name__}: {raised.value}"
    return str(raised.value)


def check(case: Case, tmp_path: Path) -> None:
    message = message_of(case, tmp_path)
    for fragment in case.fragments:
        assert fragment in message, f"{fragment!r} not in message: {message}"


def shown(message: str, tmp_path: Path) -> str:
    """Return `message` as the README shows it: the temporary folder as <tmp>, digests as <sha256>, on one line."""
    text = message.replace(str(tmp_path), "<tmp>")
    text = re.sub(r"\b[0-9a-f]{64}\b", "<sha256>", text)
    return re.sub(r"\s+", " ", text).strip()
