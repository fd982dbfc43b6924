"""The `neuroude` command: fit, evaluate and sample latent UDEs."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .errors import NeuroudeError

logger = logging.getLogger("neuroude")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuroude", description="Fit universal differential equations to neural recordings."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    fit = commands.add_parser("fit", help="fit a latent UDE and write a run folder")
    fit.add_argument("config", nargs="?", help="YAML run configuration (default: the packaged receptor-neuron fit)")
    fit.add_argument("--out", default=None, help="run folder to write (default: runs/<config name>)")
    fit.add_argument("--seed", type=int, default=None, help="random seed; overrides the config's seed")
    fit.add_argument("--steps", type=int, default=None, help="training steps; overrides training.steps")
    fit.add_argument("--resume", action="store_true", help="continue the fit in --out from its last checkpoint")
    fit.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    fit.add_argument("--quiet", action="store_true", help="no progress bar (for batch jobs)")

    evaluate = commands.add_parser("evaluate", help="recompute held-out metrics and figures of a fitted run")
    evaluate.add_argument("run_dir", help="run folder written by `neuroude fit`")

    sample = commands.add_parser("sample", help="write predictive samples of a fitted run to an NPZ file")
    sample.add_argument("run_dir", help="run folder written by `neuroude fit`")
    sample.add_argument("--n", type=int, default=32, help="samples per trial (default 32)")
    sample.add_argument("--split", choices=("train", "validation", "test"), default="test",
                        help="which trials to sample (default test)")
    sample.add_argument("--seed", type=int, default=0, help="random seed of the samples")

    commands.add_parser("models", help="list the mechanistic drifts with their constants and defaults")
    return parser


def _fit(arguments) -> int:
    from .config import RunConfig, load_config
    from .errors import ConfigError
    from .workflow import fit_run

    config = load_config(arguments.config) if arguments.config else RunConfig()
    if arguments.seed is not None:
        config.seed = arguments.seed
    if arguments.steps is not None and arguments.steps < 1:
        raise ConfigError(f"--steps is {arguments.steps}; expected an integer >= 1")
    name = Path(arguments.config).stem if arguments.config else "receptor-neuron"
    out = arguments.out or str(Path("runs") / name)

    run = fit_run(config, out, arguments.resume, arguments.overwrite, arguments.quiet, arguments.steps)
    _print_metrics(run.metrics)
    print(f"run folder: {run.folder.root}")
    return 0


def _print_metrics(metrics: dict) -> None:
    test = metrics["test"]
    key = "bits_per_spike" if metrics["observation"] == "poisson" else "r_squared"
    print(f"held-out test {key.replace('_', ' ')} (first {metrics['skip_bins']} bins of each trial not scored):")
    for name, scores in test.items():
        if name == "co_smoothing":
            continue
        score = scores.get(key)
        score_text = "n/a (non-finite predictions)" if score is None else f"{score: .4f}"
        print(f"  {name:<50s} {score_text}")
    if "co_smoothing" in test:
        _print_co_smoothing(test["co_smoothing"])


def _print_co_smoothing(scores: dict) -> None:
    print(f"held-out neurons {scores['heldout_channels']} on test trials, co-smoothing bits per spike:")
    for name in ("model", "spike_smoothing", "gpfa"):
        print(f"  {name:<50s} {scores[name]: .4f}")
    for method, decoding in scores.get("behaviour_decoding_r_squared", {}).items():
        print(f"  behaviour decoding R^2 from {method:<22s} {decoding['mean']: .4f}")


def _log_to_terminal(quiet: bool) -> None:
    """Send neuroude's log messages to standard error: warnings only with `quiet`, else progress messages too.

    The run's log file records every message either way.
    """
    package_logger = logging.getLogger("neuroude")
    for handler in [h for h in package_logger.handlers if getattr(h, "is_terminal_handler", False)]:
        package_logger.removeHandler(handler)

    handler = logging.StreamHandler(sys.stderr)
    handler.is_terminal_handler = True
    handler.setLevel(logging.WARNING if quiet else logging.INFO)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    _log_to_terminal(quiet=getattr(arguments, "quiet", False))
    try:
        if arguments.command == "fit":
            return _fit(arguments)
        if arguments.command == "evaluate":
            from .workflow import evaluate_run

            _print_metrics(evaluate_run(arguments.run_dir))
            return 0
        if arguments.command == "models":
            from .dynamics.mechanistic import describe_models

            print(describe_models())
            return 0
        if arguments.command == "sample":
            from .workflow import sample_run

            if arguments.n < 1:
                raise NeuroudeError(f"--n is {arguments.n}; expected an integer >= 1")
            print(sample_run(arguments.run_dir, arguments.n, arguments.split, arguments.seed))
            return 0
    except NeuroudeError as error:
        print(f"neuroude {arguments.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue the fit with --resume", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
