"""Reduced-rank regression: the closed form on a case computed by hand, and recovery of a low-rank map."""

import numpy as np
import pytest

from neuroude.baselines import ReducedRankRegression, fit_reduced_rank_by_cross_validation
from neuroude.errors import ConfigError, DataError

# Four centred samples on the axes, targets y = x diag(3, 1). X'X = 2 I, so the fitted values X B have
# singular values 3 sqrt(2) along target 0 and sqrt(2) along target 1.
HAND_X = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
HAND_Y = HAND_X @ np.diag([3.0, 1.0])


@pytest.mark.parametrize(
    ("rank", "ridge", "expected"),
    [
        (2, 0.0, [3.0, 1.0]),  # the full least-squares map
        (1, 0.0, [3.0, 0.0]),  # only the stronger direction of the fitted values is kept
        # lambda = 1 * trace(X'X) / 2 = 2, so B_ridge = (2 I + 2 I)^-1 2 diag(3, 1) = diag(1.5, 0.5)
        (2, 1.0, [1.5, 0.5]),
        (1, 1.0, [1.5, 0.0]),
    ],
)
def test_closed_form_by_hand(rank, ridge, expected):
    model = ReducedRankRegression(rank, ridge).fit(HAND_X, HAND_Y)
    np.testing.assert_allclose(model.predict(np.array([[1.0, 1.0]])), [expected], atol=1e-12)
    # Shifting sources and targets shifts only the intercepts.
    shifted = ReducedRankRegression(rank, ridge).fit(HAND_X + 5.0, HAND_Y - 2.0)
    np.testing.assert_allclose(shifted.predict(np.array([[6.0, 6.0]])), [np.array(expected) - 2.0], atol=1e-12)


def low_rank_data(n_trials, seed, noise=0.5):
    """Targets y = x B + noise with B = (8 x 6) of rank 2, on (trials, 10 bins, channels) arrays."""
    rng = np.random.default_rng(seed)
    mapping = np.random.default_rng(0).normal(size=(8, 2)) @ np.random.default_rng(1).normal(size=(2, 6))
    x = rng.normal(size=(n_trials, 10, 8))
    return x, x @ mapping + noise * rng.normal(size=(n_trials, 10, 6)), mapping


def test_cross_validation_recovers_rank_and_map():
    x, y, mapping = low_rank_data(80, seed=2)
    model, settings = fit_reduced_rank_by_cross_validation(x, y)

    assert settings["rank"] == 2
    assert settings["ridge"] in (0.0, 0.01)
    assert np.linalg.matrix_rank(model.coefficients, tol=1e-8) == 2
    np.testing.assert_allclose(model.coefficients, mapping, atol=0.1)

    # On new trials it explains as much variance as the true map, up to sampling error.
    x_new, y_new, _ = low_rank_data(40, seed=3)
    residual_true = y_new - x_new @ mapping
    residual_fit = y_new - model.predict(x_new)
    assert np.sum(residual_fit**2) < 1.02 * np.sum(residual_true**2)
    assert set(settings["cross_validated_r_squared"]) == set(range(1, 7))
    assert settings["cross_validated_r_squared"][1] < settings["cross_validated_r_squared"][2]


def test_bad_settings_and_shapes():
    with pytest.raises(ConfigError, match="rank is 3; expected at most min"):
        ReducedRankRegression(3).fit(HAND_X, HAND_Y)
    with pytest.raises(ConfigError, match="rank is 0"):
        ReducedRankRegression(0)
    with pytest.raises(DataError, match=r"x has shape \(4, 2\) and y \(3, 2\)"):
        ReducedRankRegression(1).fit(HAND_X, HAND_Y[:3])
    with pytest.raises(ConfigError, match="not fitted"):
        ReducedRankRegression(1).predict(HAND_X)
    x, y, _ = low_rank_data(4, seed=0)
    with pytest.raises(ConfigError, match="n_folds is 5; expected between 2 and the 4 trials"):
        fit_reduced_rank_by_cross_validation(x, y)


# Two extra samples whose stored values are garbage, masked out on one channel each.
GARBAGE_X = np.concatenate([HAND_X, [[40.0, -7.0], [3.0, 25.0]]])
GARBAGE_Y = np.concatenate([HAND_Y, [[-90.0, 11.0], [np.nan, 2.0]]])
GARBAGE_X_MASK = np.concatenate([np.ones((4, 2), bool), [[False, True], [True, True]]])
GARBAGE_Y_MASK = np.concatenate([np.ones((4, 2), bool), [[True, True], [False, True]]])


@pytest.mark.parametrize(("rank", "ridge"), [(2, 0.0), (1, 0.0), (2, 1.0)])
def test_masked_fit_ignores_unobserved_samples(rank, ridge):
    masked = ReducedRankRegression(rank, ridge).fit(GARBAGE_X, GARBAGE_Y, GARBAGE_X_MASK, GARBAGE_Y_MASK)
    clean = ReducedRankRegression(rank, ridge).fit(HAND_X, HAND_Y)

    np.testing.assert_allclose(masked.coefficients, clean.coefficients, atol=1e-12)
    np.testing.assert_allclose(masked.target_mean, clean.target_mean, atol=1e-12)
    # The garbage would change the fit if it were read: its targets are finite once the NaN is replaced.
    unmasked = ReducedRankRegression(rank, ridge).fit(GARBAGE_X, np.nan_to_num(GARBAGE_Y))
    assert np.abs(unmasked.coefficients - clean.coefficients).max() > 0.1


def test_masked_prediction_uses_source_mean():
    model = ReducedRankRegression(2).fit(HAND_X + 5.0, HAND_Y)
    x = np.array([[6.0, 123.0]])
    # Source 1 is unobserved, so it counts as its mean, 5: the prediction is that of (6, 5), i.e. (3, 0).
    prediction = model.predict(x, np.array([[True, False]]))
    np.testing.assert_allclose(prediction, [[3.0, 0.0]], atol=1e-12)
    with pytest.raises(DataError, match="x_mask has shape"):
        model.predict(x, np.array([True, False]))


def test_masked_cross_validation_recovers_map():
    x, y, mapping = low_rank_data(80, seed=2)
    rng = np.random.default_rng(4)
    x_mask, y_mask = rng.random(x.shape) > 0.1, rng.random(y.shape) > 0.1
    x_garbage = np.where(x_mask, x, 1e3 * rng.normal(size=x.shape))
    y_garbage = np.where(y_mask, y, np.nan)

    model, settings = fit_reduced_rank_by_cross_validation(x_garbage, y_garbage, x_mask=x_mask, y_mask=y_mask)

    assert settings["rank"] == 2
    np.testing.assert_allclose(model.coefficients, mapping, atol=0.15)
    with pytest.raises(DataError, match="0 samples with every source and target observed"):
        ReducedRankRegression(1).fit(x, y, np.zeros(x.shape, bool))
