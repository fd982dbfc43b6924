"""The identifiability classification on Hessians with known classes, and its column in the report."""

import numpy as np
import pytest

from neuroude.errors import ConfigError
from neuroude.identifiability import (
    IDENTIFIABLE,
    NOT_IDENTIFIABLE,
    WEAKLY_IDENTIFIABLE,
    classify_constants,
)
from neuroude.report import _constants_table


def test_classification_by_relative_std():
    # Independent constants with relative std 1 %, 20 % and 80 %: identifiable, weakly, not (1.96 * 0.8 > 1).
    estimate = np.array([2.0, 0.5, 10.0])
    relative_std = np.array([0.01, 0.2, 0.8])
    hessian = np.diag(1.0 / (relative_std * estimate) ** 2)
    report = classify_constants(["x", "y", "z"], estimate, np.ones(3), hessian)

    assert report.status == [IDENTIFIABLE, WEAKLY_IDENTIFIABLE, NOT_IDENTIFIABLE]
    np.testing.assert_allclose(report.relative_std, relative_std, rtol=1e-10)
    assert report.flat_directions == []


def test_classification_uses_transform_slope():
    # A raw std of 0.1 through a slope of 0.2 is a physical std of 0.02, 1 % of the estimate 2.
    report = classify_constants(["x"], np.array([2.0]), np.array([0.2]), np.array([[100.0]]))
    assert report.relative_std[0] == pytest.approx(0.01, rel=1e-10)
    assert report.status == [IDENTIFIABLE]


def test_classification_flags_flat_pair():
    # The objective depends on x and y through x + y only, and z is separate and well determined.
    hessian = np.array([[1e4, 1e4, 0.0], [1e4, 1e4, 0.0], [0.0, 0.0, 1e6]])
    report = classify_constants(["x", "y", "z"], np.ones(3), np.ones(3), hessian)
    record = report.to_dict()

    assert report.status == [NOT_IDENTIFIABLE, NOT_IDENTIFIABLE, IDENTIFIABLE]
    assert record["constants"]["x"]["relative_std"] is None
    assert record["constants"]["x"]["flat_loading"] == pytest.approx(0.5, rel=1e-6)
    loadings = record["flat_directions"][0]["loadings"]
    assert loadings["x"] == pytest.approx(-loadings["y"], rel=1e-6)
    assert abs(loadings["z"]) < 1e-8


def test_classification_of_non_finite_hessian():
    report = classify_constants(["x", "y"], np.ones(2), np.ones(2), np.array([[1.0, np.nan], [np.nan, 1.0]]))
    assert report.status == [NOT_IDENTIFIABLE, NOT_IDENTIFIABLE]


@pytest.mark.parametrize("arguments, message", [
    ({"tolerance": 0.0}, "tolerance"),
    ({"level": 1.0}, "level"),
    ({"hessian": np.eye(3)}, "Hessian"),
    ({"names": [], "estimate": np.ones(0), "slopes": np.ones(0), "hessian": np.zeros((0, 0))}, "no constants"),
])
def test_classification_rejects_bad_arguments(arguments, message):
    values = {"names": ["x", "y"], "estimate": np.ones(2), "slopes": np.ones(2), "hessian": np.eye(2), **arguments}
    with pytest.raises(ConfigError, match=message):
        classify_constants(**values)


def test_names_with_rejects_unknown_status():
    report = classify_constants(["x"], np.ones(1), np.ones(1), np.eye(1))
    with pytest.raises(ConfigError, match="status"):
        report.names_with("identified")


def test_report_table_shows_classes():
    rows = [
        {"name": "mechanistic.a", "default": 0.7, "initial": 0.5, "fitted": 0.71, "learnable": True, "transform": "positive"},
        {"name": "i_ext", "default": 0.5, "initial": 0.5, "fitted": 0.5, "learnable": False, "transform": "real"},
    ]
    record = classify_constants(["a"], np.array([0.71]), np.ones(1), np.array([[1e6]])).to_dict()
    table = _constants_table(rows, record)

    assert "<th>identifiability</th>" in table
    # The grey-box prefix is dropped to match the Laplace names, and a frozen constant has no class.
    assert "<td>identifiable</td>" in table
    assert table.count("<td>n/a</td>") == 2
    assert "identifiability" not in _constants_table(rows)
