"""Phase portraits: flow field, nullclines, fixed points coloured by stability, sample paths.

A 2-D system is drawn in its own coordinates. A system of higher dimension is
drawn in a plane `x = mean + z1 v1 + z2 v2`, by default the first two principal
components of visited states, with the other principal coordinates held at the
mean (`neuroude analyze` holds them at a fixed point instead, see `Projection.through`). The arrows and nullclines are those of the projected velocity
`(v1 . f(x), v2 . f(x))` on that plane, which is the exact flow only when the
plane is invariant. A 1-D system is drawn as `f(x)` against `x`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ConfigError
from ..plots import _save, plt
from .fixed_points import SLOW_POINT, Drift, Equilibrium

STABILITY_COLOURS = {
    "stable node": "tab:blue",
    "stable focus": "tab:cyan",
    "unstable node": "tab:red",
    "unstable focus": "tab:pink",
    "saddle": "tab:orange",
    "saddle-focus": "tab:brown",
    "non-hyperbolic": "tab:purple",
}


@dataclass
class Projection:
    """A plane through `mean` (d,) spanned by the orthonormal rows of `components` (2, d)."""

    mean: np.ndarray
    components: np.ndarray
    labels: tuple[str, str] = ("z1", "z2")

    def project(self, states) -> np.ndarray:
        """Return the plane coordinates (..., 2) of states (..., d)."""
        return (np.asarray(states, np.float64) - self.mean) @ self.components.T

    def lift(self, coordinates) -> np.ndarray:
        """Return the states (..., d) at plane coordinates (..., 2)."""
        return self.mean + np.asarray(coordinates, np.float64) @ self.components

    def through(self, state) -> Projection:
        """Return the parallel plane that contains `state`, keeping the plane coordinates of every state.

        Only the coordinates off the plane move (to those of `state`), so a fixed point drawn in the new
        plane sits where both projected velocity components vanish, on the crossing of the nullclines.
        """
        offset = np.asarray(state, np.float64) - self.mean
        off_plane = offset - (offset @ self.components.T) @ self.components
        return Projection(self.mean + off_plane, self.components, self.labels)


def identity_projection(latent_size: int = 2) -> Projection:
    """Return the plane of the first two states, with the others held at 0."""
    if latent_size < 2:
        raise ConfigError(f"latent size is {latent_size}; a plane needs at least 2 states")
    components = np.eye(latent_size)[:2]
    return Projection(np.zeros(latent_size), components, ("x1", "x2"))


def pca_projection(states) -> Projection:
    """Return the plane of the first two principal components of visited states (N, d), through their mean."""
    states = np.asarray(states, np.float64).reshape(-1, np.shape(states)[-1])
    if states.shape[1] < 2 or states.shape[0] < 2:
        raise ConfigError(f"visited states have shape {states.shape}; expected (N, d) with N >= 2 and d >= 2")
    mean = states.mean(axis=0)
    _, singular_values, right = np.linalg.svd(states - mean, full_matrices=False)
    explained = singular_values**2 / max(float(np.sum(singular_values**2)), 1e-30)
    labels = (f"PC1 ({100 * explained[0]:.0f}% var.)", f"PC2 ({100 * explained[1]:.0f}% var.)")
    return Projection(mean, right[:2], labels)


def default_projection(latent_size: int, states=None) -> Projection:
    """Return the identity plane for 2 states, else the principal-component plane of `states`."""
    if latent_size == 2:
        return identity_projection(2)
    if states is None:
        raise ConfigError(f"latent size is {latent_size}; a projection needs visited states to find principal components")
    return pca_projection(states)


def projected_velocity(drift: Drift, u, projection: Projection, z1, z2) -> tuple[np.ndarray, np.ndarray]:
    """Return the plane components of `f` on the grid `z1 x z2`, each of shape (len(z2), len(z1))."""
    grid = np.stack(np.meshgrid(z1, z2), axis=-1)
    states = jnp.asarray(projection.lift(grid.reshape(-1, 2)), jnp.float32)
    u = jnp.zeros((0,), jnp.float32) if u is None else jnp.atleast_1d(jnp.asarray(u, jnp.float32))
    velocity = np.asarray(jax.vmap(lambda x: drift(x, u))(states), np.float64)
    plane = velocity @ projection.components.T
    return plane[:, 0].reshape(grid.shape[:2]), plane[:, 1].reshape(grid.shape[:2])


def _limits(points: Sequence[Equilibrium], paths, projection: Projection | None, latent_size: int) -> np.ndarray:
    """Return [[low1, high1], [low2, high2]] covering the points and paths, padded by 20%, at least 1 wide."""
    cloud = [point.state[None] for point in points]
    if paths is not None:
        cloud.append(np.asarray(paths, np.float64).reshape(-1, latent_size))
    if not cloud:
        return np.array([[-2.0, 2.0], [-2.0, 2.0]])
    states = np.concatenate(cloud)
    # A diverged sample path must not stretch the axes to infinity.
    states = states[np.all(np.isfinite(states), axis=1)]
    if states.shape[0] == 0:
        return np.array([[-2.0, 2.0], [-2.0, 2.0]])
    coordinates = projection.project(states) if projection is not None else states
    low, high = coordinates.min(axis=0), coordinates.max(axis=0)
    centre, half = 0.5 * (low + high), np.maximum(0.6 * (high - low), 0.5)
    return np.stack([centre - half, centre + half], axis=1)


def _draw_points(axis, points: Sequence[Equilibrium], coordinates) -> None:
    drawn = set()
    for point, position in zip(points, coordinates):
        colour = STABILITY_COLOURS.get(point.stability, "black")
        label = SLOW_POINT if point.kind == SLOW_POINT else point.stability
        face = "none" if point.kind == SLOW_POINT or not point.is_stable else colour
        axis.plot(*position, "o", ms=8, mec=colour, mfc=face, mew=2, zorder=5,
                  label=None if label in drawn else label)
        drawn.add(label)


def plot_phase_portrait(
    drift: Drift,
    u,
    path,
    points: Sequence[Equilibrium] = (),
    paths=None,
    projection: Projection | None = None,
    limits=None,
    grid_size: int = 25,
    title: str = "",
) -> Path:
    """Draw the phase portrait of `drift(x, u)` and write it to `path` as PNG.

    `points` are fixed and slow points (filled markers for stable fixed points,
    hollow for the others, colour by stability). `paths` (n, T, d) are sample
    paths, for example from the fitted SDE. `projection` is required for
    more than 2 states (see `default_projection`). `limits` is
    [[low1, high1], [low2, high2]] in plane coordinates (or [low, high] in 1-D).
    """
    latent_size = _latent_size(points, paths, projection)
    if latent_size == 1:
        return _plot_line(drift, u, path, points, paths, limits, title)
    projection = projection or default_projection(latent_size)
    if projection.components.shape[1] != latent_size:
        raise ConfigError(
            f"the projection is for {projection.components.shape[1]} states; expected the latent size {latent_size}"
        )

    limits = np.asarray(limits, np.float64) if limits is not None else _limits(points, paths, projection, latent_size)
    z1, z2 = np.linspace(*limits[0], grid_size), np.linspace(*limits[1], grid_size)
    v1, v2 = projected_velocity(drift, u, projection, z1, z2)

    figure, axis = plt.subplots(figsize=(5.5, 5))
    speed = np.hypot(v1, v2)
    axis.streamplot(z1, z2, v1, v2, color=np.log10(speed + 1e-12), cmap="Greys", density=1.1, linewidth=0.7)
    axis.contour(z1, z2, v1, levels=[0.0], colors="tab:green", linewidths=1.5)
    axis.contour(z1, z2, v2, levels=[0.0], colors="tab:olive", linewidths=1.5, linestyles="--")
    axis.plot([], [], color="tab:green", label=f"{projection.labels[0]} nullcline")
    axis.plot([], [], color="tab:olive", ls="--", label=f"{projection.labels[1]} nullcline")
    if paths is not None:
        for sample in np.asarray(paths, np.float64):
            axis.plot(*projection.project(sample).T, color="tab:blue", lw=0.6, alpha=0.5)
    if points:
        _draw_points(axis, points, projection.project(np.stack([point.state for point in points])))

    axis.set_xlim(*limits[0])
    axis.set_ylim(*limits[1])
    axis.set_xlabel(projection.labels[0])
    axis.set_ylabel(projection.labels[1])
    axis.set_title(title)
    axis.legend(fontsize=7, loc="upper right", framealpha=0.8)
    return _save(figure, path)


def _latent_size(points, paths, projection) -> int:
    if points:
        return points[0].state.shape[0]
    if paths is not None:
        return np.shape(paths)[-1]
    if projection is not None:
        return projection.components.shape[1]
    raise ConfigError("cannot tell the latent size: pass points, paths or a projection")


def _plot_line(drift: Drift, u, path, points, paths, limits, title: str) -> Path:
    limits = np.asarray(limits, np.float64).ravel() if limits is not None else _limits(points, paths, None, 1)[0]
    xs = np.linspace(limits[0], limits[1], 200)
    u = jnp.zeros((0,), jnp.float32) if u is None else jnp.atleast_1d(jnp.asarray(u, jnp.float32))
    velocity = np.asarray(jax.vmap(lambda x: drift(x, u))(jnp.asarray(xs[:, None], jnp.float32)))[:, 0]

    figure, axis = plt.subplots(figsize=(5.5, 3.5))
    axis.plot(xs, velocity, color="black", lw=1)
    axis.axhline(0.0, color="grey", lw=0.5)
    if points:
        _draw_points(axis, points, [(point.state[0], 0.0) for point in points])
    axis.set_xlabel("x")
    axis.set_ylabel("dx/dt")
    axis.set_title(title)
    if points:
        axis.legend(fontsize=7)
    return _save(figure, path)


def plot_branches(branches, path, state_index: int = 0, parameter_name: str = "p", title: str = "") -> Path:
    """Draw one state of continuation branches against the parameter: solid where stable, dashed where not, bifurcations marked."""
    figure, axis = plt.subplots(figsize=(5.5, 3.5))
    for number, branch in enumerate(branches):
        stable = np.array([label.startswith("stable") for label in branch.stability])
        values = branch.states[:, state_index]
        axis.plot(branch.parameters, np.where(stable, values, np.nan), color="tab:blue", lw=1.5,
                  label="stable" if number == 0 else None)
        axis.plot(branch.parameters, np.where(~stable, values, np.nan), color="tab:red", lw=1.0, ls="--",
                  label="unstable" if number == 0 else None)
        for point in branch.bifurcations:
            marker = {"fold": "s", "hopf": "D"}.get(point.kind, "x")
            axis.plot(point.parameter, point.state[state_index], marker, color="black", ms=6)
            axis.annotate(point.kind, (point.parameter, point.state[state_index]), fontsize=7,
                          xytext=(4, 4), textcoords="offset points")
    axis.set_xlabel(parameter_name)
    axis.set_ylabel(f"x{state_index + 1} at equilibrium")
    axis.set_title(title)
    axis.legend(fontsize=7)
    return _save(figure, path)


REGIME_COLOURS = {
    "equilibrium": "tab:blue", "oscillation": "tab:orange", "multistability": "tab:green",
    "unbounded": "tab:red", "undetermined": "0.7",
}


def plot_regimes(regime_map, path, first_name: str = "p1", second_name: str = "p2", title: str = "") -> Path:
    """Draw a regime map as coloured cells, the first parameter along x and the second along y."""
    from matplotlib.colors import ListedColormap

    names = list(REGIME_COLOURS)
    codes = np.array([[names.index(label) for label in row] for row in regime_map.labels], float)
    figure, axis = plt.subplots(figsize=(5.5, 4.0))
    colours = ListedColormap([REGIME_COLOURS[name] for name in names])
    axis.pcolormesh(_cell_edges(regime_map.first), _cell_edges(regime_map.second), codes.T, cmap=colours,
                    vmin=-0.5, vmax=len(names) - 0.5)
    present = [name for name in names if any(name in row for row in regime_map.labels)]
    handles = [plt.Rectangle((0, 0), 1, 1, color=REGIME_COLOURS[name]) for name in present]
    axis.legend(handles, present, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    axis.set_xlabel(first_name)
    axis.set_ylabel(second_name)
    axis.set_title(title)
    return _save(figure, path)


def _cell_edges(centres: np.ndarray) -> np.ndarray:
    """Return cell boundaries around grid centres, half a spacing beyond the first and last (width 1 for a single centre)."""
    centres = np.asarray(centres, float)
    if centres.size == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    middles = 0.5 * (centres[1:] + centres[:-1])
    return np.concatenate([[2 * centres[0] - middles[0]], middles, [2 * centres[-1] - middles[-1]]])
