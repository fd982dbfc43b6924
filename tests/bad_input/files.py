"""Byte-level damage shared by the file-format cases: truncation and flipped bytes."""

from __future__ import annotations

from pathlib import Path


def truncate(path: Path, keep: int | None = None) -> Path:
    """Cut `path` to its first `keep` bytes (half the file by default), as an interrupted copy would."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])
    return path


def flip(path: Path, start: int, length: int = 64) -> Path:
    """Invert `length` bytes of `path` from `start`, as a damaged disk would."""
    data = path.read_bytes()
    damaged = bytes(byte ^ 0xFF for byte in data[start : start + length])
    path.write_bytes(data[:start] + damaged + data[start + length :])
    return path


def copy_bytes(source: Path, target: Path) -> Path:
    """Write the bytes of `source` under the name `target`, so the extension no longer matches the content."""
    target.write_bytes(source.read_bytes())
    return target
