"""Run configuration: defaults, validation messages and YAML round trip."""

import pytest

from neuroude.config import RunConfig, dump_config, load_config, parse_config
from neuroude.errors import ConfigError, DataFileError


def test_default_is_packaged_real_data():
    config = RunConfig()
    assert config.data.source == "grasshopper"
    assert config.model.observation == "poisson"
    assert config.evaluation.skip_bins >= config.model.n_init_bins


def test_yaml_round_trip(tmp_path):
    config = parse_config({"model": {"latent_size": 3}, "training": {"steps": 7}, "seed": 4})
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(config))
    assert load_config(path) == config


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"modle": {}}, "Did you mean 'model'?"),
        ({"model": {"latnt_size": 2}}, "Did you mean 'latent_size'?"),
        ({"solver": {"metod": "heun"}}, "allowed keys here: adjoint, atol, checkpoint_bins, max_state, method"),
        ({"model": {"latent_size": 0}}, "model.latent_size"),
        ({"solver": {"method": "rk4"}}, "solver.method"),
        ({"data": {"source": "npz"}}, "data.path is missing"),
        ({"data": {"split": [0.5, 0.5, 0.5]}}, "sum to 1"),
        ({"model": {"drift": "fitzhugh_nagumo", "latent_size": 3}}, "has 2 states"),
        ({"model": {"drift": "fitzhugh_nagumu", "latent_size": 2}}, "Did you mean 'fitzhugh_nagumo'?"),
        ({"model": {"residual": True}}, "needs a mechanistic drift"),
        ({"model": {"drift": "fitzhugh_nagumo", "latent_size": 2, "closure": "recovry"}}, "closure terms"),
        ({"model": {"closure": "recovery"}}, "model.closure needs a mechanistic drift"),
        ({"evaluation": {"skip_bins": 2}}, "must not be scored"),
        ({"solver": {"method": "tsit5"}}, "integrates ODEs only"),
    ],
)
def test_invalid_config_message(raw, expected):
    with pytest.raises(ConfigError) as error:
        parse_config(raw)
    assert expected in str(error.value)


def test_config_must_be_mapping():
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_config([1, 2])


def test_empty_yaml_gives_default(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path) == RunConfig()


def test_directory_as_config(tmp_path):
    with pytest.raises(DataFileError, match="is a directory"):
        load_config(tmp_path)


def test_yaml_tags_not_executed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_relative_data_path_read_beside_config(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    path = folder / "c.yaml"
    path.write_text("data:\n  source: npz\n  path: recording.npz\n")
    assert load_config(path).data.path == str(folder.resolve() / "recording.npz")
