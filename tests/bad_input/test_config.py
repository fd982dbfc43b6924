"""Bad YAML run configurations given to load_config, and configured paths given to load_data."""

import numpy as np
import pytest
import yaml

from neuroude.build import load_data
from neuroude.config import load_config
from neuroude.data import Recording, save_npz
from neuroude.errors import ConfigError, DataError, DataFileError

from .cases import Case, check


def load_text(text: str):
    def action(tmp):
        path = tmp / "run.yaml"
        path.write_text(text)
        return load_config(path)

    return action


def load_yaml(value):
    return load_text(yaml.safe_dump(value))


def load_bytes(data: bytes):
    def action(tmp):
        path = tmp / "run.yaml"
        path.write_bytes(data)
        return load_config(path)

    return action


def load_directory(tmp):
    (tmp / "run.yaml").mkdir()
    return load_config(tmp / "run.yaml")


def load_unreadable(tmp):
    path = tmp / "run.yaml"
    path.write_text("seed: 1\n")
    path.chmod(0)
    return load_config(path)


def load_data_of(value, recording=None):
    # The config sits one folder down, so a relative data path is resolved beside it, not beside the caller.
    def action(tmp):
        if recording is not None:
            save_npz(recording, tmp / "recording.npz")
        path = tmp / "configs" / "run.yaml"
        path.parent.mkdir()
        path.write_text(yaml.safe_dump(value))
        return load_data(load_config(path))

    return action


FRACTIONAL = Recording(y=np.full((4, 5, 2), 0.5), ts=np.arange(5) * 0.01)
UNEVEN = Recording(y=np.ones((4, 5, 2)), ts=np.array([0.0, 0.01, 0.02, 0.04, 0.05]))

CASES = [
    Case("unknown section", load_yaml({"trainning": {"steps": 5}}), ConfigError,
         "unknown config key 'trainning'", "allowed keys here", "Did you mean 'training'?"),
    Case("misspelt key", load_yaml({"training": {"learnig_rate": 0.1}}), ConfigError,
         "'training.learnig_rate'", "allowed keys here", "Did you mean 'learning_rate'?"),
    Case("misspelt nested key", load_yaml({"model": {"network": {"connectivty": "c.npy"}}}), ConfigError,
         "'model.network.connectivty'", "allowed keys here", "Did you mean 'connectivity'?"),
    Case("wrong value type", load_yaml({"training": {"steps": "many"}}), ConfigError,
         "training.steps", "(got 'many')", "valid integer"),
    Case("fractional integer", load_yaml({"training": {"batch_size": 2.5}}), ConfigError,
         "training.batch_size", "(got 2.5)", "valid integer"),
    Case("negative steps", load_yaml({"training": {"steps": -5}}), ConfigError,
         "training.steps", "(got -5)", "greater than or equal to 1"),
    Case("zero learning rate", load_yaml({"training": {"learning_rate": 0}}), ConfigError,
         "training.learning_rate", "(got 0)", "greater than 0"),
    Case("NaN bin width", load_text("data:\n  bin_width: .nan\n"), ConfigError,
         "data.bin_width", "(got nan)", "greater than 0"),
    Case("lr factor above 1", load_yaml({"training": {"nonfinite_lr_factor": 2}}), ConfigError,
         "training.nonfinite_lr_factor", "(got 2)", "less than or equal to 1"),
    Case("unknown solver", load_yaml({"solver": {"method": "rk4"}}), ConfigError,
         "solver.method", "(got 'rk4')", "'euler', 'heun', 'reversible_heun', 'tsit5', 'dopri5' or 'kvaerno5'"),
    Case("unknown drift", load_yaml({"model": {"drift": "fitzhugh"}}), ConfigError,
         "model.drift", "'fitzhugh'", "fitzhugh_nagumo"),
    Case("section not a mapping", load_yaml({"training": 5}), ConfigError,
         "training", "(got 5)", "valid dictionary"),
    Case("list at top level", load_yaml([1, 2]), ConfigError,
         "the configuration", "is a list", "expected a mapping of sections"),
    Case("split sum", load_yaml({"data": {"split": [0.5, 0.5, 0.5]}}), ConfigError,
         "data.split", "(0.5, 0.5, 0.5)", "expected three positive fractions that sum to 1"),
    Case("split length", load_yaml({"data": {"split": [0.5, 0.5]}}), ConfigError,
         "data.split", "2 values were given (got [0.5, 0.5])", "expected three fractions (train, validation, test)"),
    Case("npz without path", load_yaml({"data": {"source": "npz"}}), ConfigError,
         "data.path is missing", "source 'npz'", "needs the path of a recording file"),
    Case("skip_bins too small", load_yaml({"evaluation": {"skip_bins": 2}}), ConfigError,
         "evaluation.skip_bins is 2", "below model.n_init_bins 10", "must not be scored"),
    Case("ODE solver with noise", load_yaml({"solver": {"method": "tsit5"}}), ConfigError,
         "solver.method", "'tsit5' integrates ODEs only", "set model.diffusion to 'none'"),
    Case("latent size of drift", load_yaml({"model": {"drift": "fitzhugh_nagumo", "latent_size": 3}}), ConfigError,
         "model.latent_size is 3", "latent_size", "has 2 states"),
    Case("invalid YAML", load_text("training: {steps: 5\n"), ConfigError,
         "run.yaml", "is not valid YAML", "expected ',' or '}'"),
    Case("python object tag", load_text("seed: !!python/object/apply:os.system ['true']\n"), ConfigError,
         "run.yaml", "is not valid YAML", "could not determine a constructor"),
    Case("binary file", load_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe"), ConfigError,
         "run.yaml", "is not UTF-8 text", "expected a YAML file"),
    Case("config missing", lambda tmp: load_config(tmp / "absent.yaml"), DataFileError,
         "config file", "absent.yaml not found", "expected an existing YAML file"),
    Case("config directory", load_directory, DataFileError,
         "config path", "is a directory", "expected a YAML file"),
    Case("config unreadable", load_unreadable, DataFileError,
         "config file", "Permission denied", "expected a readable file", needs_permissions=True),
    Case("data path missing", load_data_of({"data": {"source": "npz", "path": "absent.npz"}}), DataFileError,
         "recording file not found", "configs/absent.npz", "expected an existing NPZ file"),
    Case("data path above config", load_data_of({"data": {"source": "npz", "path": "../absent.npz"}}), DataFileError,
         "recording file not found", "/absent.npz", "expected an existing NPZ file"),
    Case("counts for Poisson", load_data_of({"data": {"source": "npz", "path": "../recording.npz"}}, FRACTIONAL),
         DataError, "y has 40 non-integer values", "e.g. 0.5", "expected integer spike counts"),
    Case("uneven bins", load_data_of({"data": {"source": "npz", "path": "../recording.npz"}}, UNEVEN),
         DataError, "ts has bins of different widths", "from 0.01 s to 0.02 s", "expected evenly spaced bins"),
]


@pytest.mark.parametrize("case", [case.param() for case in CASES])
def test_bad_config_rejected(case, tmp_path):
    check(case, tmp_path)
