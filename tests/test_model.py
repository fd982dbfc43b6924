"""LatentUDE: objective terms, gradients and prediction."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config, tiny_recording
from neuroude.build import build_model
from neuroude.errors import ConfigError


def batch(recording):
    y = jnp.asarray(recording.y)
    return y, jnp.asarray(recording.u), jnp.ones_like(y)


def test_loss_terms_finite(make_model, recording):
    model = make_model()
    loss, terms = model.loss(*batch(recording), 0.0, 0.01, jax.random.PRNGKey(0), 1.0, 2)
    assert np.isfinite(float(loss))
    assert float(terms["kl_initial"]) >= 0.0
    assert float(terms["kl_path"]) >= 0.0
    assert float(loss) == pytest.approx(
        -float(terms["log_likelihood"]) + float(terms["kl_initial"]) + float(terms["kl_path"]), rel=1e-5
    )


def test_path_kl_zero_at_initialisation(make_model, recording):
    # The posterior correction starts at zero, so the posterior SDE equals the prior.
    model = make_model()
    _, terms = model.loss(*batch(recording), 0.0, 0.01, jax.random.PRNGKey(0))
    assert float(terms["kl_path"]) == 0.0


def test_ode_model_has_no_path_kl(recording):
    config = tiny_config(model={"diffusion": "none"}, solver={"method": "tsit5"})
    model = build_model(config, 3, 1, jax.random.PRNGKey(0))
    assert model.correction is None
    _, terms = model.loss(*batch(recording), 0.0, 0.01, jax.random.PRNGKey(0))
    assert float(terms["kl_path"]) == 0.0
    assert np.isfinite(float(terms["log_likelihood"]))


def test_beta_scales_only_kl(make_model, recording):
    model = make_model()
    args = (*batch(recording), 0.0, 0.01, jax.random.PRNGKey(0))
    loss_zero, terms = model.loss(*args, 0.0)
    assert float(loss_zero) == pytest.approx(-float(terms["log_likelihood"]), rel=1e-6)


def as_float64(model):
    return jax.tree_util.tree_map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, model)


def test_elbo_gradient_matches_finite_differences():
    recording = tiny_recording(n_trials=2, n_time=6)
    with jax.enable_x64(True):
        model = as_float64(build_model(tiny_config(), 3, 1, jax.random.PRNGKey(1), 0.5))
        # Move the posterior correction off zero so every term has a gradient.
        model = eqx.tree_at(lambda m: m.correction.layers[-1].weight, model,
                            0.3 * jnp.ones_like(model.correction.layers[-1].weight))
        y = jnp.asarray(recording.y, jnp.float64)
        stimulus = jnp.asarray(recording.u, jnp.float64)
        mask = jnp.ones_like(y)
        params, static = eqx.partition(model, eqx.is_inexact_array)

        # Compiled, as in a fit, because op by op JAX compiled each float64 operation of the loss and its
        # gradient as a program of its own, which took most of the test's time.
        @jax.jit
        def loss(p):
            return eqx.combine(p, static).loss(y, stimulus, mask, 0.0, 0.01, jax.random.PRNGKey(2), 0.7, 2)[0]

        gradient = jax.jit(jax.grad(loss))(params)
        leaves, treedef = jax.tree_util.tree_flatten(params)
        keys = jax.random.split(jax.random.PRNGKey(3), len(leaves))
        direction = jax.tree_util.tree_unflatten(
            treedef, [jax.random.normal(k, leaf.shape, jnp.float64) for k, leaf in zip(keys, leaves)]
        )
        step = 1e-5
        plus = jax.tree_util.tree_map(lambda p, d: p + step * d, params, direction)
        minus = jax.tree_util.tree_map(lambda p, d: p - step * d, params, direction)
        finite_difference = (loss(plus) - loss(minus)) / (2 * step)
        analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree_util.tree_leaves(gradient), jax.tree_util.tree_leaves(direction)))
        assert float(analytic) == pytest.approx(float(finite_difference), rel=1e-5)


def test_predict_shapes_and_positive_rates(make_model, recording):
    model = make_model()
    expected, paths = model.predict_trial(jnp.asarray(recording.y[0]), jnp.asarray(recording.u[0]), 0.0, 0.01,
                                          jax.random.PRNGKey(0), 5)
    assert expected.shape == (5, recording.n_time, recording.n_channels)
    assert paths.shape == (5, recording.n_time, 2)
    assert bool(jnp.all(expected > 0))


def test_prediction_ignores_spikes_after_initial_bins(make_model, recording):
    # Only the first n_init_bins bins may inform a held-out prediction.
    model = make_model()
    y = jnp.asarray(recording.y[0])
    altered = y.at[3:].set(5.0)
    first, _ = model.predict_trial(y, jnp.asarray(recording.u[0]), 0.0, 0.01, jax.random.PRNGKey(0), 3)
    second, _ = model.predict_trial(altered, jnp.asarray(recording.u[0]), 0.0, 0.01, jax.random.PRNGKey(0), 3)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(second))


def test_stimulus_reaches_prediction(make_model, recording):
    model = make_model()
    y = jnp.asarray(recording.y[0])
    stimulus = jnp.asarray(recording.u[0])
    first, _ = model.predict_trial(y, stimulus, 0.0, 0.01, jax.random.PRNGKey(0), 2)
    second, _ = model.predict_trial(y, stimulus + 3.0, 0.0, 0.01, jax.random.PRNGKey(0), 2)
    assert not np.allclose(np.asarray(first), np.asarray(second))


def test_posterior_paths_shape(make_model, recording):
    model = make_model()
    paths = model.posterior_paths(jnp.asarray(recording.y[0]), jnp.asarray(recording.u[0]), 0.0, 0.01,
                                  jax.random.PRNGKey(0), 4)
    assert paths.shape == (4, recording.n_time, 2)


@pytest.mark.parametrize("method", ["euler", "heun"])
@pytest.mark.parametrize("diffusion", ["additive", "network", "input_scaled"])
def test_sde_variants_give_finite_loss(method, diffusion, recording):
    config = tiny_config(model={"diffusion": diffusion, "diffusion_uses_input": True, "interpolation": "hold"},
                         solver={"method": method, "n_substeps": 2})
    model = build_model(config, 3, 1, jax.random.PRNGKey(0))
    loss, _ = model.loss(*batch(recording), 0.0, 0.01, jax.random.PRNGKey(0))
    assert np.isfinite(float(loss))


@pytest.mark.parametrize("residual", [False, True])
def test_mechanistic_drifts_give_finite_loss(residual, recording):
    # FitzHugh-Nagumo's default time scale (100 / s) needs steps well below 10 ms for Euler to stay stable.
    config = tiny_config(model={"drift": "fitzhugh_nagumo", "residual": residual, "residual_penalty": 0.1},
                         solver={"n_substeps": 10})
    model = build_model(config, 3, 1, jax.random.PRNGKey(0))
    loss, terms = model.loss(*batch(recording), 0.0, 0.01, jax.random.PRNGKey(0))
    assert np.isfinite(float(loss))
    assert float(terms["residual_penalty"]) >= 0.0


def test_gaussian_observation_loss(recording):
    config = tiny_config(model={"observation": "gaussian"})
    model = build_model(config, 3, 1, jax.random.PRNGKey(0))
    loss, _ = model.loss(*batch(recording), 0.0, 0.01, jax.random.PRNGKey(0))
    assert np.isfinite(float(loss))


def test_recording_without_stimulus(make_model):
    recording = tiny_recording(n_inputs=0)
    config = tiny_config()
    model = build_model(config, 3, 0, jax.random.PRNGKey(0))
    y = jnp.asarray(recording.y)
    loss, _ = model.loss(y, jnp.zeros(y.shape[:2] + (0,)), jnp.ones_like(y), 0.0, 0.01, jax.random.PRNGKey(0))
    assert np.isfinite(float(loss))


def test_mismatched_recognition_size_rejected(make_model):
    model = make_model()
    with pytest.raises(ConfigError, match="latent_size 3"):
        type(model)(model.encoder, model.recognition, model.sde, model.observation, 3, 4, key=jax.random.PRNGKey(0))


def test_diverged_prediction_scores_minus_infinity():
    from neuroude.evaluate import _score

    prediction = np.ones((2, 5, 1))
    prediction[0, 3, 0] = np.inf
    scores = _score(np.ones((2, 5, 1)), prediction, None, 1, "poisson")
    assert scores["bits_per_spike"] == -np.inf
    assert scores["nonfinite_predictions"] == 1


@pytest.mark.parametrize("model_settings", [
    {"diffusion": "network", "diffusion_uses_input": True},
    {"diffusion": "input_scaled", "encoder": "linear"},
    {"drift": "fitzhugh_nagumo", "residual": True, "observation": "gaussian"},
])
def test_no_weak_typed_parameters(model_settings):
    # A weak-typed leaf turns strong after the first update and makes the training step compile twice.
    model = build_model(tiny_config(model=model_settings), 3, 1, jax.random.PRNGKey(0))
    weak = [path for path, leaf in jax.tree_util.tree_leaves_with_path(model)
            if eqx.is_array(leaf) and getattr(leaf, "weak_type", False)]
    assert weak == []


@pytest.mark.parametrize("name", ["hodgkin_huxley", "morris_lecar", "izhikevich", "wilson_cowan", "rate_network",
                                  "jansen_rit", "linear", "stuart_landau", "kuramoto", "lorenz", "van_der_pol"])
def test_registered_model_builds_from_config(name, recording):
    from neuroude.dynamics.mechanistic import MODELS

    latent_size = MODELS[name].state_size or 3
    config = tiny_config(model={"drift": name, "latent_size": latent_size})
    model = build_model(config, 3, 1, jax.random.PRNGKey(0))
    drift = model.sde.drift(0.0, jnp.zeros(latent_size), jnp.ones(model.encoder.output_size))
    assert drift.shape == (latent_size,)
    assert bool(jnp.all(jnp.isfinite(drift)))


def network_config(tmp_path, latent_size=6, **network):
    connectivity = np.array([[0.0, 1.0, 0.5], [1.0, 0.0, 0.2], [0.5, 0.2, 0.0]])
    np.save(tmp_path / "connectome.npy", connectivity)
    settings = {"local": "stuart_landau", "connectivity": str(tmp_path / "connectome.npy"), **network}
    return tiny_config(model={"drift": "network", "latent_size": latent_size, "network": settings})


def test_network_drift_from_config(tmp_path, recording):
    model = build_model(network_config(tmp_path), 3, 1, jax.random.PRNGKey(0))
    assert model.sde.drift.state_size == 6
    loss, _ = model.loss(*batch(recording), 0.0, 0.01, jax.random.PRNGKey(0))
    assert np.isfinite(float(loss))


def test_network_latent_size_mismatch(tmp_path):
    with pytest.raises(ConfigError, match="set model.latent_size to 6"):
        build_model(network_config(tmp_path, latent_size=4), 3, 1, jax.random.PRNGKey(0))


def test_network_missing_connectivity_file(tmp_path):
    from neuroude.errors import DataFileError

    config = network_config(tmp_path)
    config.model.network.connectivity = str(tmp_path / "absent.npy")
    with pytest.raises(DataFileError, match="absent.npy not found"):
        build_model(config, 3, 1, jax.random.PRNGKey(0))


def test_network_section_required():
    with pytest.raises(ConfigError, match="model.network is missing"):
        tiny_config(model={"drift": "network", "latent_size": 6})


@pytest.mark.parametrize("model_settings", [
    {"drift": "fitzhugh_nagumo", "closure": "recovery"},
    {"drift": "wilson_cowan", "closure": "sigmoid", "diffusion": "multiplicative"},
])
def test_closure_and_multiplicative_noise_from_config(model_settings, recording):
    from neuroude.dynamics import NeuralClosure

    config = tiny_config(model=model_settings, solver={"n_substeps": 10})
    model = build_model(config, 3, 1, jax.random.PRNGKey(0))
    assert isinstance(model.sde.drift, NeuralClosure)
    loss, _ = model.loss(*batch(recording), 0.0, 0.01, jax.random.PRNGKey(0))
    assert np.isfinite(float(loss))


def test_readout_sees_only_observed_states(recording):
    config = tiny_config(model={"drift": "fitzhugh_nagumo", "observed_states": "model"}, solver={"n_substeps": 10})
    model = build_model(config, 3, 1, jax.random.PRNGKey(0))
    assert model.observed_states == (0,)
    assert model.observation.readout.weight.shape == (3, 1)
    loss, _ = model.loss(*batch(recording), 0.0, 0.01, jax.random.PRNGKey(0))
    assert np.isfinite(float(loss))


def test_observed_state_index_out_of_range():
    config = tiny_config(model={"observed_states": [0, 5]})
    with pytest.raises(ConfigError, match=r"observed_states \[5\] are out of range"):
        build_model(config, 3, 1, jax.random.PRNGKey(0))


def test_mlp_drift_has_no_model_observables():
    config = tiny_config(model={"observed_states": "model"})
    with pytest.raises(ConfigError, match="names no observable states"):
        build_model(config, 3, 1, jax.random.PRNGKey(0))


def test_checkpointed_model_matches_plain(make_model, recording):
    plain = make_model(tiny_config(solver={"n_substeps": 2}))
    segmented = make_model(tiny_config(solver={"n_substeps": 2, "checkpoint_bins": 5}))

    # Compiled, as in a fit, because op by op JAX compiled each operation as a program of its own.
    @eqx.filter_jit
    @eqx.filter_value_and_grad
    def loss_and_grad(model):
        return model.loss(*batch(recording), 0.0, 0.01, jax.random.PRNGKey(3), 1.0, 1)[0]

    plain_loss, plain_grads = loss_and_grad(plain)
    segmented_loss, segmented_grads = loss_and_grad(segmented)

    assert float(segmented_loss) == pytest.approx(float(plain_loss), rel=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(plain_grads), jax.tree_util.tree_leaves(segmented_grads)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
