"""Atomic files and run folders."""

import pytest

from neuroude.errors import DataFileError, RunFolderError
from neuroude.runs import RunFolder, atomic_open, write_text


def test_failed_write_keeps_old_file(tmp_path):
    path = tmp_path / "metrics.json"
    write_text(path, "old")
    with pytest.raises(RuntimeError):
        with atomic_open(path) as stream:
            stream.write("half")
            raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_run_folder_over_file_rejected(tmp_path):
    target = tmp_path / "run"
    target.write_text("")
    with pytest.raises(RunFolderError, match="is a file"):
        RunFolder(target).prepare(resume=False, overwrite=False)


def test_overwrite_clears_old_outputs(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.prepare(resume=False, overwrite=False)
    write_text(run.config, "seed: 0\n")
    write_text(run.metrics, "{}")
    write_text(run.log, "old run\n")
    run.prepare(resume=False, overwrite=True)
    assert not run.metrics.exists()
    assert not run.log.exists()


def test_require_fitted_names_missing_file(tmp_path):
    run = RunFolder(tmp_path)
    with pytest.raises(DataFileError, match="config.yaml not found"):
        run.require_fitted()


def test_json_writes_nonfinite_as_null(tmp_path):
    import json
    import math

    from neuroude.runs import write_json

    write_json(tmp_path / "m.json", {"score": -math.inf, "nested": [math.nan, 1.5]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"score": None, "nested": [None, 1.5]}


def test_written_files_follow_umask(tmp_path):
    import os

    previous = os.umask(0o022)
    try:
        write_text(tmp_path / "metrics.json", "{}")
    finally:
        os.umask(previous)
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o644
