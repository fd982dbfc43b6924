"""The catalogue's README lists every case with the message it produces now."""

from pathlib import Path

from .readme import render


def test_readme_matches_cases():
    committed = (Path(__file__).parent / "README.md").read_text()
    assert committed == render(), "tests/bad_input/README.md is stale; run python tests/bad_input/readme.py"
