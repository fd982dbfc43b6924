"""Property tests: any configuration or recording either loads or raises one of the package's errors."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neuroude.config import RunConfig, parse_config
from neuroude.data import Recording
from neuroude.errors import NeuroudeError

SECTION_KEYS = {
    "data": ["source", "path", "bin_width", "trial_duration", "split", "sourse"],
    "model": ["latent_size", "drift", "diffusion", "observation", "closure", "residual", "observed_states", "lattent"],
    "solver": ["method", "n_substeps", "adjoint", "rtol"],
    "training": ["steps", "batch_size", "learning_rate", "kl_schedule", "patience"],
    "evaluation": ["n_samples", "skip_bins"],
    "sovler": ["method"],
}

values = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 2000), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["mlp", "fitzhugh_nagumo", "network", "euler", "tsit5", "npz", "all"]),
    st.lists(st.integers(-2, 5), max_size=3),
)
sections = st.sampled_from(sorted(SECTION_KEYS)).flatmap(
    lambda section: st.tuples(
        st.just(section),
        st.dictionaries(st.sampled_from(SECTION_KEYS[section]), values, max_size=4),
    )
)
configs = st.one_of(
    st.lists(sections, max_size=4).map(dict),
    st.lists(sections, max_size=3).map(lambda items: {**dict(items), "seed": 1}),
    values,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs)
def test_config_loads_or_raises_package_error(raw):
    try:
        config = parse_config(raw)
    except NeuroudeError:
        return
    assert isinstance(config, RunConfig)


shapes = st.lists(st.integers(0, 4), min_size=1, max_size=4).map(tuple)


@st.composite
def recordings(draw):
    y_shape = draw(shapes)
    y = draw(st.sampled_from([np.zeros, np.ones]))(y_shape)
    if y.size and draw(st.booleans()):
        y.flat[0] = draw(st.sampled_from([np.nan, np.inf, -1.0, 0.5]))
    n_time = y_shape[1] if len(y_shape) > 1 else 0
    ts = np.arange(draw(st.sampled_from([n_time, n_time + 1, max(n_time - 1, 0)]))) * 0.01
    if ts.size > 2 and draw(st.booleans()):
        ts[1], ts[2] = ts[2], ts[1]
    u = None
    if draw(st.booleans()):
        u_shape = draw(st.sampled_from([y_shape[:2] + (1,), (y_shape[0] + 1,) + y_shape[1:2] + (1,), y_shape[:1]]))
        u = np.zeros(u_shape)
    mask = None if draw(st.booleans()) else np.ones(draw(st.sampled_from([y_shape, y_shape[:-1]])), bool)
    return {"y": y, "ts": ts, "u": u, "mask": mask}


@settings(max_examples=300, deadline=None)
@given(recordings())
def test_recording_loads_or_raises_package_error(arrays):
    try:
        recording = Recording(**arrays)
    except NeuroudeError:
        return
    assert recording.y.ndim == 3
    assert np.all(np.isfinite(recording.y))
    assert recording.ts.shape == (recording.n_time,)


# -- files: YAML configs, NPZ archives and checkpoints, valid, invalid and damaged ------------------


def damage(data: bytes, kind: str, position: float, byte: int) -> bytes:
    """Return `data` truncated, with one byte replaced, or with one byte inserted at a relative `position`."""
    index = min(int(position * len(data)), max(len(data) - 1, 0))
    if kind == "truncate":
        return data[:index]
    if kind == "replace" and data:
        return data[:index] + bytes([byte]) + data[index + 1 :]
    if kind == "insert":
        return data[:index] + bytes([byte]) + data[index:]
    return data


damages = st.tuples(st.sampled_from(["none", "truncate", "replace", "insert"]), st.floats(0, 1), st.integers(0, 255))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs, damages)
def test_config_file_loads_or_raises_package_error(raw, damage_spec):
    import tempfile
    from pathlib import Path

    import yaml

    from neuroude.config import load_config

    data = damage(yaml.safe_dump(raw).encode(), *damage_spec)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "run.yaml"
        path.write_bytes(data)
        try:
            config = load_config(path)
        except NeuroudeError:
            return
    assert isinstance(config, RunConfig)


npz_values = st.one_of(
    st.sampled_from([np.zeros((3, 4, 2)), np.ones((3, 4, 2)), np.arange(4) * 0.01, np.float64(0.01), np.ones((3, 4)),
                     np.full((3, 4, 2), np.nan), np.ones((3, 4, 2), bool), np.array("{}"), np.array("[1]"),
                     np.array("text"), np.zeros((0, 4, 2)), np.arange(4)[::-1] * 0.01, np.float64(-1.0)]),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=5).map(np.asarray),
)
npz_keys = st.sampled_from(["y", "spikes", "traces", "ts", "dt", "u", "mask", "behaviour", "metadata_json",
                            "channel_names", "README", "trial_ids"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(npz_keys, npz_values, max_size=6), damages)
def test_npz_file_loads_or_raises_package_error(arrays, damage_spec):
    import io
    import tempfile
    from pathlib import Path

    from neuroude.data import load_npz

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "recording.npz"
        path.write_bytes(damage(buffer.getvalue(), *damage_spec))
        try:
            recording = load_npz(path)
        except NeuroudeError:
            return
    assert recording.y.ndim == 3
    assert np.all(np.isfinite(recording.y))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damages)
def test_damaged_checkpoint_rejected_or_unchanged(damage_spec):
    import tempfile
    from pathlib import Path

    import jax.numpy as jnp

    from neuroude.runs import load_checkpoint, save_checkpoint

    tree = {"weight": jnp.arange(6.0), "bias": jnp.zeros(2)}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "last.eqx"
        save_checkpoint(path, {"step": 3, "best_metric": 0.5}, tree)
        original = path.read_bytes()
        damaged = damage(original, *damage_spec)
        path.write_bytes(damaged)
        try:
            header, loaded = load_checkpoint(path, tree)
        except NeuroudeError:
            assert damaged != original
            return
    # Only an undamaged file (or a change that leaves the same bytes) may load.
    assert damaged == original
    assert header == {"step": 3, "best_metric": 0.5}
    np.testing.assert_array_equal(np.asarray(loaded["weight"]), np.arange(6.0))
