"""Bad arguments given to the `neuroude` command: it exits with status 2 and a message on standard error."""

import numpy as np
import pytest
import yaml

from .cases import Case, check, run_cli


def cli(*argv):
    return lambda tmp: run_cli([str(arg).replace("<tmp>", str(tmp)) for arg in argv])


def cli_with_config(config, *argv):
    def action(tmp):
        (tmp / "run.yaml").write_text(yaml.safe_dump(config))
        return cli(*argv)(tmp)

    return action


def cli_with_file(*argv):
    def action(tmp):
        (tmp / "taken").write_text("")
        return cli(*argv)(tmp)

    return action


def cli_with_npz(damage, *argv):
    # Writes a valid archive to <tmp>/recording.npz, then replaces its bytes with damage(bytes).
    def action(tmp):
        path = tmp / "recording.npz"
        np.savez(path, y=np.ones((2, 5, 3)), dt=0.01)
        path.write_bytes(damage(path.read_bytes()))
        return cli(*argv)(tmp)

    return action


CASES = [
    Case("steps zero", cli("fit", "--steps", "0"), 2,
         "--steps", "is 0", "expected an integer >= 1"),
    Case("steps not a number", cli("fit", "--steps", "abc"), 2,
         "argument --steps", "'abc'", "invalid int value"),
    Case("seed fractional", cli("fit", "--seed", "1.5"), 2,
         "argument --seed", "'1.5'", "invalid int value"),
    Case("unknown option", cli("fit", "--stpes", "5"), 2,
         "unrecognized arguments", "--stpes", "usage: neuroude"),
    Case("unknown command", cli("train"), 2,
         "argument command", "'train'", "choose from"),
    Case("no command", cli(), 2,
         "command", "required", "usage: neuroude"),
    Case("config missing", cli("fit", "<tmp>/absent.yaml"), 2,
         "neuroude fit: error: config file", "absent.yaml not found", "expected an existing YAML file"),
    Case("config misspelt", cli_with_config({"training": {"step": 5}}, "fit", "<tmp>/run.yaml"), 2,
         "'training.step'", "unknown config key", "Did you mean 'steps'?"),
    Case("resume empty folder", cli("fit", "--resume", "--out", "<tmp>/empty"), 2,
         "cannot resume", "not found", "start a new fit without --resume"),
    Case("out is a file", cli_with_file("fit", "--out", "<tmp>/taken"), 2,
         "run folder", "is a file", "expected a directory or a new path"),
    Case("sample count zero", cli("sample", "<tmp>/run", "--n", "0"), 2,
         "--n", "is 0", "expected an integer >= 1"),
    Case("sample split", cli("sample", "<tmp>/run", "--split", "training"), 2,
         "argument --split", "'training'", "choose from 'train', 'validation', 'test'"),
    Case("evaluate missing run", cli("evaluate", "<tmp>/absent"), 2,
         "run folder", "absent not found", "expected a folder written by `neuroude fit`"),
    Case("inspect truncated npz", cli_with_npz(lambda data: data[: len(data) // 2], "data", "inspect",
                                               "<tmp>/recording.npz"), 2,
         "could not read", "recording.npz", "expected a file written by numpy.savez"),
    Case("inspect text as npz", cli_with_npz(lambda data: b"trial,rate\n1,3\n", "data", "inspect",
                                             "<tmp>/recording.npz"), 2,
         "recording.npz is not a valid NPZ (zip) archive", "b'trial,ra'", "expected a file written by numpy.savez"),
    Case("inspect missing file", cli("data", "inspect", "<tmp>/absent.npz"), 2,
         "neuroude data: error", "recording file not found", "absent.npz"),
]


@pytest.mark.parametrize("case", [case.param() for case in CASES])
def test_bad_command_rejected(case, tmp_path):
    check(case, tmp_path)
