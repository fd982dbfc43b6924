"""Solver checks against analytic solutions and convergence orders."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroude.errors import ConfigError
from neuroude.solve import brownian_increments, solve_adaptive, solve_adaptive_segment, solve_fixed_step

MU, SIGMA, X0, T = 1.0, 0.5, 1.0, 1.0


def gbm_fields(t, x, k, frac):
    return MU * x, SIGMA * x, jnp.zeros(())


def brownian_endpoint(key, n_steps):
    # The one bin from 0 to T contains all n_steps solver steps.
    return jnp.sum(brownian_increments(key, jnp.arange(1), n_steps, 1, T / n_steps, jnp.float32))


def gbm_errors(n_substeps, n_paths, method):
    keys = jax.random.split(jax.random.PRNGKey(0), n_paths)

    def one(key):
        path, _ = solve_fixed_step(gbm_fields, jnp.array([X0]), 0.0, T, 2, n_substeps, key, method)
        w_end = brownian_endpoint(key, n_substeps)
        drift = MU - 0.5 * SIGMA**2 if method == "euler" else MU
        exact = X0 * jnp.exp(drift * T + SIGMA * w_end)
        return path[-1, 0], exact

    numeric, exact = jax.jit(jax.vmap(one))(keys)
    return np.asarray(numeric), np.asarray(exact)


def slope(step_sizes, errors):
    return np.polyfit(np.log(step_sizes), np.log(errors), 1)[0]


def test_euler_maruyama_strong_order():
    substeps = [4, 8, 16, 32, 64]
    errors = []
    for n in substeps:
        numeric, exact = gbm_errors(n, 4000, "euler")
        errors.append(np.mean(np.abs(numeric - exact)))
    order = slope([T / n for n in substeps], errors)
    assert 0.35 < order < 0.75, f"strong order {order:.2f}, errors {errors}"


def test_euler_maruyama_weak_order():
    substeps = [2, 4, 8, 16]
    errors = []
    for n in substeps:
        numeric, _ = gbm_errors(n, 100_000, "euler")
        errors.append(abs(np.mean(numeric) - X0 * np.exp(MU * T)))
    order = slope([T / n for n in substeps], errors)
    assert 0.75 < order < 1.3, f"weak order {order:.2f}, errors {errors}"


def test_heun_converges_to_stratonovich_solution():
    coarse = gbm_errors(4, 2000, "heun")
    fine = gbm_errors(64, 2000, "heun")
    coarse_error = np.mean(np.abs(coarse[0] - coarse[1]))
    fine_error = np.mean(np.abs(fine[0] - fine[1]))
    assert fine_error < 0.2 * coarse_error
    assert fine_error < 0.01


def ou_path_kl_closed_form(theta_prior, theta_post, sigma, x0, horizon):
    # E_Q[x_t^2] for the posterior OU process, integrated over [0, horizon].
    decay = (1.0 - np.exp(-2.0 * theta_post * horizon)) / (2.0 * theta_post)
    integral = x0**2 * decay + sigma**2 / (2.0 * theta_post) * (horizon - decay)
    return 0.5 * (theta_prior - theta_post) ** 2 / sigma**2 * integral


def test_path_kl_matches_ornstein_uhlenbeck_closed_form():
    theta_prior, theta_post, sigma, x0 = 1.0, 3.0, 0.8, 1.5

    def fields(t, x, k, frac):
        difference = (-theta_post * x) - (-theta_prior * x)
        kl_rate = 0.5 * jnp.sum((difference / sigma) ** 2)
        return -theta_post * x, jnp.full_like(x, sigma), kl_rate

    def one(key):
        _, path_kl = solve_fixed_step(fields, jnp.array([x0]), 0.0, 0.01, 101, 10, key, "euler")
        return path_kl

    samples = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(3), 4000)))
    expected = ou_path_kl_closed_form(theta_prior, theta_post, sigma, x0, 1.0)
    standard_error = samples.std() / np.sqrt(samples.size)
    # Allow three standard errors plus 1 % for the O(step) bias of Euler-Maruyama.
    assert abs(samples.mean() - expected) < 3 * standard_error + 0.01 * expected


def decay_fields(t, x, k, frac):
    return -2.0 * x, jnp.zeros_like(x), jnp.zeros(())


def test_fixed_step_without_noise_is_euler():
    path, path_kl = solve_fixed_step(decay_fields, jnp.array([1.0]), 0.0, 0.1, 4, 5, None, "euler")
    expected = (1.0 - 2.0 * 0.02) ** (5 * np.arange(4))
    np.testing.assert_allclose(np.asarray(path[:, 0]), expected, rtol=1e-5)
    assert float(path_kl) == 0.0


@pytest.mark.parametrize("method", ["tsit5", "dopri5", "kvaerno5"])
def test_adaptive_solvers_match_exponential(method):
    path, _ = solve_adaptive(decay_fields, jnp.array([1.0]), 0.0, 0.1, 11, method, rtol=1e-6, atol=1e-8)
    expected = np.exp(-2.0 * 0.1 * np.arange(11))
    np.testing.assert_allclose(np.asarray(path[:, 0]), expected, rtol=1e-4)


class LinearDecay(eqx.Module):
    rate: jax.Array

    def __call__(self, t, x, k, frac):
        return -self.rate * x, jnp.zeros_like(x), jnp.zeros(())


def test_backsolve_gradient_matches_checkpoint():
    def loss(rate, adjoint):
        path, _ = solve_adaptive(LinearDecay(rate), jnp.array([1.0]), 0.0, 0.1, 11, "tsit5", adjoint, rtol=1e-7, atol=1e-9)
        return jnp.sum(path**2)

    checkpoint = jax.grad(loss)(jnp.array(2.0), "checkpoint")
    backsolve = jax.grad(loss)(jnp.array(2.0), "backsolve")
    assert abs(float(checkpoint) - float(backsolve)) < 1e-3 * abs(float(checkpoint))


class DrivenDecay(eqx.Module):
    """dx/dt = -rate x + u(t), with u linearly interpolated between per-bin values."""

    rate: jax.Array
    drive: jax.Array

    def __call__(self, t, x, k, frac):
        upper = jnp.minimum(k + 1, self.drive.shape[0] - 1)
        u = self.drive[k] + frac * (self.drive[upper] - self.drive[k])
        return -self.rate * x + u, jnp.zeros_like(x), jnp.zeros(())


def segmented_sum(fields, x0, n_bins, segment, adjoint):
    """Return sum(path**2) solved segment by segment, each segment rematerialised as streaming does."""

    def one_segment(x, index):
        first = index * segment
        rows = jnp.take(fields.drive, jnp.clip(first + jnp.arange(segment + 1), 0, n_bins - 1), axis=0)
        local = eqx.tree_at(lambda f: f.drive, fields, rows)
        ends = solve_adaptive_segment(local, x, 0.0, 0.1, n_bins, first, segment, "tsit5", adjoint, 1e-7, 1e-9)
        path = jnp.concatenate([x[None], ends[:-1]])
        valid = (first + jnp.arange(segment) < n_bins)[:, None]
        return ends[-1], jnp.sum(jnp.where(valid, path**2, 0.0))

    _, sums = jax.lax.scan(jax.checkpoint(one_segment), x0, jnp.arange(-(-n_bins // segment)))
    return jnp.sum(sums)


def test_adaptive_segments_match_whole_trial():
    # 23 bins in segments of 5: the last segment runs past the trial's end and is masked.
    # Each segment restarts the step size, so the gradients agree to the solver's tolerance, not to rounding.
    fields = DrivenDecay(jnp.array(2.0), jax.random.normal(jax.random.PRNGKey(0), (23, 1)))
    x0 = jnp.array([1.0])

    def whole_sum(fields, x0):
        path, _ = solve_adaptive(fields, x0, 0.0, 0.1, 23, "tsit5", "checkpoint", rtol=1e-7, atol=1e-9)
        return jnp.sum(path**2)

    value, grads = jax.value_and_grad(whole_sum, argnums=(0, 1))(fields, x0)
    for adjoint in ("checkpoint", "backsolve"):
        segmented, segmented_grads = jax.value_and_grad(segmented_sum, argnums=(0, 1))(fields, x0, 23, 5, adjoint)

        assert float(segmented) == pytest.approx(float(value), rel=1e-5)
        for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(segmented_grads)):
            np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5 * float(jnp.max(jnp.abs(a))))


def test_unknown_method_rejected():
    with pytest.raises(ConfigError, match="fixed-step method is 'rk4'"):
        solve_fixed_step(decay_fields, jnp.array([1.0]), 0.0, 0.1, 4, 1, None, "rk4")


def test_adaptive_method_rejected_for_sde():
    from neuroude.solve import check_method

    with pytest.raises(ConfigError, match="integrates ODEs only"):
        check_method("tsit5", is_ode=False)


def tanh_fields(t, x, k, frac):
    """A nonlinear drift with additive noise and a non-zero KL rate, so every carry entry matters."""
    drift = jnp.tanh(1.5 * x[::-1]) - x + 0.1 * k
    return drift, 0.2 * jnp.ones_like(x), 0.5 * jnp.sum(drift**2)


@pytest.mark.parametrize("method", ["euler", "heun"])
@pytest.mark.parametrize("checkpoint_bins", [1, 4, 7])
def test_checkpointed_solve_matches_plain_scan(method, checkpoint_bins):
    x0 = jnp.array([0.3, -0.5])

    def loss(x0, checkpoint_bins):
        path, path_kl = solve_fixed_step(tanh_fields, x0, 0.0, 0.01, 20, 3, jax.random.key(2), method, checkpoint_bins)
        return jnp.sum(path**2) + path_kl, path

    (plain, plain_path), plain_grad = jax.value_and_grad(loss, has_aux=True)(x0, 0)
    (segmented, segmented_path), segmented_grad = jax.value_and_grad(loss, has_aux=True)(x0, checkpoint_bins)

    assert segmented_path.shape == plain_path.shape == (20, 2)
    np.testing.assert_allclose(segmented_path, plain_path, rtol=1e-6, atol=1e-6)
    assert float(segmented) == pytest.approx(float(plain), rel=1e-6)
    np.testing.assert_allclose(segmented_grad, plain_grad, rtol=1e-5, atol=1e-6)


def backward_memory(n_bins: int, checkpoint_bins: int) -> int:
    """Return XLA's temporary buffer size in bytes for the gradient of a path loss over `n_bins` bins."""
    weights = jnp.full((16, 16), 0.05)

    def loss(weights):
        def fields(t, x, k, frac):
            return jnp.tanh(weights @ x) - x, 0.1 * jnp.ones_like(x), jnp.zeros(())

        path, _ = solve_fixed_step(fields, jnp.ones(16), 0.0, 0.01, n_bins, 4, jax.random.key(0), "euler", checkpoint_bins)
        return jnp.sum(path**2)

    compiled = jax.jit(jax.grad(loss)).lower(weights).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_checkpointing_cuts_backward_memory():
    plain = backward_memory(1024, 0)
    segmented = backward_memory(1024, 32)
    # The plain scan stores every sub-step's state and activations, the segmented one about sqrt of them.
    assert segmented < plain / 4


def test_negative_checkpoint_bins_rejected():
    with pytest.raises(ConfigError, match="checkpoint_bins is -1"):
        solve_fixed_step(decay_fields, jnp.array([1.0]), 0.0, 0.1, 4, 1, None, "euler", -1)
