"""The public API as README.md shows it, and the packaged configuration."""

from pathlib import Path

import jax

import neuroude as nu

REPOSITORY = Path(__file__).resolve().parents[1]


def test_public_api_names():
    for name in ["fit_run", "load_run", "evaluate_run", "sample_run", "load_config", "build_model",
                 "load_grasshopper", "load_npz", "save_npz", "Recording", "RunConfig", "LatentUDE", "SDE"]:
        assert hasattr(nu, name), name


def test_packaged_config_is_default():
    config = nu.load_config(REPOSITORY / "configs" / "receptor-neuron.yaml")
    assert config == nu.RunConfig()


def test_readme_model_building():
    config = nu.load_config(REPOSITORY / "configs" / "receptor-neuron.yaml")
    recording = nu.load_grasshopper(bin_width=0.005)
    model = nu.build_model(config, recording.n_channels, recording.n_inputs, jax.random.PRNGKey(0))
    assert isinstance(model, nu.LatentUDE)
    assert recording.y.shape == (20, 200, 1)


def test_errors_share_base_class():
    for error in [nu.ConfigError, nu.DataError, nu.DataFileError, nu.RunFolderError, nu.TrainingError]:
        assert issubclass(error, nu.NeuroudeError)
