"""Recognise a recording file's format from its first bytes, regardless of its extension.

Signatures checked:

- HDF5: the 8 bytes `\\x89HDF\\r\\n\\x1a\\n` at offset 0, or at 512, 1024, 2048, ... when the
  file starts with a user block (MATLAB v7.3 files have a 512-byte one).
- MATLAB v5 to v7: a 128-byte header whose text starts with "MATLAB 5.0 MAT-file".
- MATLAB v7.3: a header starting with "MATLAB 7.3 MAT-file" followed by HDF5 at offset 512.
- NPZ: a ZIP archive, `PK\\x03\\x04` (or `PK\\x05\\x06` for an empty one).
"""

from __future__ import annotations

import os
from pathlib import Path

from neuroude.errors import DataFileError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")

# Formats by extension. ".h5" and ".hdf5" may also contain an NWB file, which `sniff_format` distinguishes.
EXTENSIONS = {
    ".nwb": "nwb",
    ".mat": "mat",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".hdf": "hdf5",
    ".npz": "npz",
}
FORMATS = ("nwb", "mat", "hdf5", "npz")


def check_file(path: str | os.PathLike) -> Path:
    """Return `path` as a Path, raising DataFileError when it is missing or not a file."""
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"recording file not found: {path}")
    if not path.is_file():
        found = "a directory" if path.is_dir() else "not a regular file"
        raise DataFileError(f"recording path {path} is {found}; expected a recording file (NWB, MATLAB, HDF5 or NPZ)")
    return path


def hdf5_offset(path: Path) -> int | None:
    """Return the byte offset of the HDF5 signature in `path`, or None when it has none."""
    size = path.stat().st_size
    with open(path, "rb") as file:
        offset = 0
        while offset + len(HDF5_SIGNATURE) <= size:
            file.seek(offset)
            if file.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                return offset
            offset = 512 if offset == 0 else offset * 2
    return None


def _is_nwb(path: Path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as file:
            # Every NWB 2 file stores its version as a root attribute and has these groups.
            return "nwb_version" in file.attrs or {"acquisition", "general"} <= set(file.keys())
    except (OSError, RuntimeError, KeyError) as error:
        # A truncated or damaged file still starts with the signature, so report the damage rather than guess a format.
        raise DataFileError(
            f"could not open {path} as an HDF5 file ({type(error).__name__}: {error}); "
            "expected a complete, undamaged HDF5 or NWB file"
        ) from error


def sniff_format(path: str | os.PathLike) -> str:
    """Return "nwb", "mat", "hdf5" or "npz" from the file's content.

    Raises DataFileError when the content matches none of them.
    """
    path = check_file(path)
    with open(path, "rb") as file:
        head = file.read(128)

    if head.startswith(b"MATLAB 5.0 MAT-file") or head.startswith(b"MATLAB 7.3 MAT-file"):
        return "mat"
    if head[:4] in ZIP_SIGNATURES:
        return "npz"
    if hdf5_offset(path) is not None:
        return "nwb" if _is_nwb(path) else "hdf5"

    raise DataFileError(
        f"{path} is not an NWB, MATLAB, HDF5 or NPZ file: its first bytes are {head[:16]!r}; "
        "expected the HDF5 signature, a MATLAB header or a ZIP archive"
    )


def check_format(path: str | os.PathLike, expected: str) -> Path:
    """Raise DataFileError unless the content of `path` is in the format `expected`.

    NWB files are HDF5 files, so "hdf5" also accepts an NWB file, and "mat" accepts both
    MATLAB v5 and v7.3 files.
    """
    path = check_file(path)
    found = sniff_format(path)
    if found == expected or (expected == "hdf5" and found == "nwb"):
        return path
    raise DataFileError(
        f"{path} is named like a {expected.upper()} file, but its content is a {found.upper()} file; "
        f"rename it or load it with format={found!r}"
    )
