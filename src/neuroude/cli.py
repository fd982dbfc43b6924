"""The `neuroude` command: fit, evaluate, analyse, control and compare latent UDEs."""

from __future__ import annotations

import argparse
import difflib
import logging
import signal
import sys
import threading
from pathlib import Path

from .errors import NeuroudeError

logger = logging.getLogger("neuroude")

LOG_LEVELS = ("debug", "info", "warning", "error")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuroude", description="Fit universal differential equations to neural recordings."
    )
    parser.add_argument(
        "--log-level", choices=LOG_LEVELS, default=None,
        help="lowest level of log messages shown on standard error (default info, or warning with --quiet)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    fit = commands.add_parser("fit", help="fit a latent UDE and write a run folder")
    fit.add_argument("config", nargs="?", help="YAML run configuration (default: the packaged receptor-neuron fit)")
    fit.add_argument("--out", default=None, help="run folder to write (default: runs/ followed by the config file's name without .yaml, "
                     "or runs/receptor-neuron without a config)")
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

    analyze = commands.add_parser(
        "analyze", help="find fixed points, draw phase portraits and continue equilibria of a fitted run's prior drift"
    )
    analyze.add_argument("run_dir", help="run folder written by `neuroude fit`")
    analyze.add_argument("--input", nargs="+", default=None, metavar="VALUE",
                         help="constant raw stimulus levels to analyse, one figure each; a level is one number for "
                              "every input channel or comma-separated numbers, one per channel "
                              "(default: the recording's mean stimulus)")
    analyze.add_argument("--continuation", nargs=2, type=float, default=None, metavar=("LOW", "HIGH"),
                         help="follow the equilibria as the stimulus level (on every channel) goes from LOW to HIGH")
    analyze.add_argument("--continuation-constant", nargs=3, default=None, metavar=("NAME", "LOW", "HIGH"),
                         help="follow the equilibria as the drift's mechanistic constant NAME goes from LOW to HIGH, "
                              "with folds and Hopf points; the stimulus is held at the first --input level")
    analyze.add_argument("--regimes", nargs=6, default=None,
                         metavar=("NAME1", "LOW1", "HIGH1", "NAME2", "LOW2", "HIGH2"),
                         help="label equilibrium, oscillation or multistability on a grid of two parameters, each "
                              "'input' (the stimulus level on every channel) or a mechanistic constant")
    analyze.add_argument("--regime-points", type=int, default=10,
                         help="grid points per parameter of --regimes (default 10)")
    analyze.add_argument("--starts", type=int, default=64, help="starting states of the fixed-point search (default 64)")
    analyze.add_argument("--seed", type=int, default=0, help="random seed of the starts and sample paths")

    data = commands.add_parser("data", help="look at recording files")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    inspect = data_commands.add_parser("inspect", help="describe a file (NPZ, NWB, MATLAB, HDF5) and how to load it")
    inspect.add_argument("file", help="recording file")

    report = commands.add_parser(
        "report", help="write RUN_DIR/report.html, one offline HTML page with the run's figures and metrics"
    )
    report.add_argument("run_dir", help="run folder written by `neuroude fit`")
    report.add_argument("--checkpoint", choices=("best", "last"), default="best",
                        help="parameters to report on (default best)")

    control = commands.add_parser("control", help="design a stimulus that drives a fitted model towards a target")
    control.add_argument("run_dir", help="run folder written by `neuroude fit`")
    control.add_argument("--target", required=True,
                         help=".npy or .csv file of the target, (time, latents) or (time, channels) in expected "
                              "observations per bin; NaN where there is no target")
    control.add_argument("--space", choices=("latent", "rate"), default=None,
                         help="what the target describes (default: inferred from its number of columns)")
    control.add_argument("--mode", choices=("open_loop", "receding_horizon"), default="open_loop",
                         help="design the whole input at once, or re-plan in closed loop (default open_loop)")
    control.add_argument("--trial", type=int, default=0,
                         help="test trial whose first bins give the initial state (default 0)")
    control.add_argument("--u-min", type=float, default=None, help="lower input bound (default: recorded minimum)")
    control.add_argument("--u-max", type=float, default=None, help="upper input bound (default: recorded maximum)")
    control.add_argument("--smoothness", type=float, default=1e-3,
                         help="weight of the mean squared input difference between bins")
    control.add_argument("--energy", type=float, default=1e-4, help="weight of the mean squared input")
    control.add_argument("--samples", type=int, default=16, help="noise samples averaged per cost (default 16)")
    control.add_argument("--iterations", type=int, default=200, help="Adam iterations per plan (default 200)")
    control.add_argument("--learning-rate", type=float, default=0.1, help="Adam learning rate (default 0.1)")
    control.add_argument("--horizon", type=int, default=10, help="bins planned ahead in receding_horizon mode")
    control.add_argument("--interval", type=int, default=2, help="bins applied per plan in receding_horizon mode")
    control.add_argument("--seed", type=int, default=0, help="random seed of the noise samples")

    compare = commands.add_parser("compare", help="fit several configurations to the same data and compare them")
    compare.add_argument("configs", nargs="+", help="two or more YAML run configurations with the same data section")
    compare.add_argument("--out", default="runs/compare", help="folder for the runs and the table (default runs/compare)")
    compare.add_argument("--steps", type=int, default=None, help="training steps of every run; overrides training.steps")
    compare.add_argument("--seed", type=int, default=None, help="common seed (default: the first config's seed)")
    compare.add_argument("--overwrite", action="store_true", help="replace runs already in --out")
    compare.add_argument("--quiet", action="store_true", help="no progress bar (for batch jobs)")

    sweep = commands.add_parser("sweep", help="fit every combination of a sweep file as Ray tasks, locally or on a cluster")
    sweep.add_argument("sweep_file", help="YAML sweep file: base or configs, overrides and a grid of dotted keys")
    sweep.add_argument("--out", required=True, help="folder for the run folders and sweep.csv, sweep.json")
    sweep.add_argument("--address", default=None,
                       help="address of a running Ray cluster, such as ray://head:10001 or auto "
                            "(default: start a local Ray instance)")
    sweep.add_argument("--max-parallel", type=int, default=None,
                       help="most fits running at once (default: as many as the CPUs allow)")
    sweep.add_argument("--cpus-per-fit", type=float, default=1.0, help="CPUs Ray reserves for each fit (default 1)")
    sweep.add_argument("--gpus-per-fit", type=float, default=0.0, help="GPUs Ray reserves for each fit (default 0)")

    # A prefix such as --step would otherwise be taken for --steps without a word, hiding a typo.
    for command_parser in _all_parsers(parser):
        command_parser.allow_abbrev = False
    return parser


def _all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Return `parser` and every subcommand parser below it."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found.extend(_all_parsers(child))
    return found


def _command_parser(parser: argparse.ArgumentParser, arguments) -> argparse.ArgumentParser:
    """Return the parser of the (sub)command that `arguments` selected, such as `fit` or `data inspect`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = getattr(arguments, action.dest, None)
            if chosen in action.choices:
                return _command_parser(action.choices[chosen], arguments)
    return parser


def _parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    """Parse `argv`. An unknown option exits with code 2, printing the subcommand's usage and the nearest option."""
    parser = _parser()
    arguments, unknown = parser.parse_known_args(argv)
    if not unknown:
        return arguments

    command_parser = _command_parser(parser, arguments)
    options = [name for action in command_parser._actions for name in action.option_strings]
    message = f"unrecognized arguments: {' '.join(unknown)}"
    for token in unknown:
        guess = difflib.get_close_matches(token.split("=")[0], options, n=1) if token.startswith("-") else []
        if guess:
            # With several unknown options, each suggestion names the option it corrects.
            message += f"; did you mean {guess[0]}?" if len(unknown) == 1 else f"; {token}: did you mean {guess[0]}?"
    command_parser.error(message)


def _fit(arguments) -> int:
    from .config import RunConfig, load_config
    from .errors import ConfigError
    from .workflow import fit_run

    config = load_config(arguments.config) if arguments.config else RunConfig()
    if arguments.seed is not None:
        config.seed = arguments.seed
    if arguments.steps is not None and arguments.steps < 1:
        raise ConfigError(f"--steps is {arguments.steps}; expected an integer >= 1")
    out = _fit_folder(arguments)
    _enable_fit_precision(config, out, arguments.resume)

    run = fit_run(config, out, arguments.resume, arguments.overwrite, arguments.quiet, arguments.steps)
    _print_metrics(run.metrics)
    print(f"run folder: {run.folder.root}")
    return 0


def _fit_folder(arguments) -> str:
    """Return the run folder of `neuroude fit`: --out, or runs/ followed by the config file's name."""
    name = Path(arguments.config).stem if arguments.config else "receptor-neuron"
    return arguments.out or str(Path("runs") / name)


def _interrupt_hint(arguments) -> str:
    """Return what to do after a Ctrl-C: resume a fit that saved a checkpoint, else start it again."""
    if arguments.command != "fit":
        return ""
    from .runs import RunFolder

    if RunFolder(_fit_folder(arguments)).last_checkpoint.is_file():
        return "; continue the fit with --resume"
    return "; no checkpoint was saved, so start the fit again without --resume"


def _enable_fit_precision(config, out: str, resume: bool) -> None:
    """Turn on JAX's 64-bit mode for this process when the fit's `training.precision` is float64."""
    from .config import load_config
    from .precision import enable_requested_precision
    from .runs import RunFolder

    # A resumed fit uses the configuration saved in its run folder.
    saved = RunFolder(out).config
    if resume and saved.is_file():
        config = load_config(saved, saved_run=True)
    enable_requested_precision(config.training.precision)


def _analyze(arguments) -> int:
    from .analysis.report import analyze_run
    from .errors import ConfigError

    levels = None
    if arguments.input is not None:
        levels = []
        for text in arguments.input:
            try:
                values = [float(value) for value in text.split(",")]
            except ValueError:
                raise ConfigError(f"--input level {text!r} is not a number or comma-separated numbers") from None
            levels.append(values[0] if len(values) == 1 else values)
    constant = None
    if arguments.continuation_constant is not None:
        name, low, high = arguments.continuation_constant
        constant = (name, *_numbers("--continuation-constant", [low, high]))
    regimes = None
    if arguments.regimes is not None:
        first, second = arguments.regimes[:3], arguments.regimes[3:]
        regimes = (first[0], *_numbers("--regimes", first[1:]), second[0], *_numbers("--regimes", second[1:]))
    result = analyze_run(arguments.run_dir, levels, arguments.continuation, arguments.starts, arguments.seed,
                         constant, regimes, arguments.regime_points)

    for level in result["levels"]:
        kinds = [f"{point['kind']} ({point['stability']})" for point in level["points"]]
        print(f"stimulus ({level['label']}): {', '.join(kinds) or 'no fixed or slow point found'}")
    if "continuation" in result:
        _print_continuation(result["continuation"], "stimulus level")
    if "constant_continuation" in result:
        _print_continuation(result["constant_continuation"], result["constant_continuation"]["constant"])
    if "regimes" in result:
        found = sorted({label for row in result["regimes"]["labels"] for label in row})
        print(f"regimes over {' and '.join(result['regimes']['parameters'])}: {', '.join(found)}")
    print(f"analysis: {Path(arguments.run_dir) / 'analysis.json'}")
    return 0


def _print_continuation(continuation: dict, parameter: str) -> None:
    """Print the number of branches and bifurcation points of a continuation, then each point."""
    low, high = continuation["range"]
    points = [point for branch in continuation["branches"] for point in branch["bifurcations"]]
    print(f"continuation in {parameter} from {low:.4g} to {high:.4g}: {len(continuation['branches'])} branches, "
          f"{len(points)} bifurcation points (folds, Hopf points)")
    for point in points:
        print(f"  {point['kind']} at {parameter} = {point['parameter']:.4g}")


def _numbers(option: str, texts: list[str]) -> list[float]:
    from .errors import ConfigError

    try:
        return [float(text) for text in texts]
    except ValueError:
        raise ConfigError(f"{option} has bounds {texts}; expected two numbers, LOW and HIGH") from None


def _data(arguments) -> int:
    from .data.inspect import describe_file

    print(describe_file(arguments.file))
    return 0


def _report(arguments) -> int:
    from .report import write_report

    print(write_report(arguments.run_dir, arguments.checkpoint))
    return 0


def _control(arguments) -> int:
    from .control_run import control_run

    summary = control_run(
        arguments.run_dir, arguments.target, arguments.space, arguments.mode, arguments.trial, arguments.u_min,
        arguments.u_max, arguments.smoothness, arguments.energy, arguments.samples, arguments.iterations,
        arguments.learning_rate, arguments.horizon, arguments.interval, arguments.seed,
    )
    terms = summary["terms"]
    print(f"{summary['mode']} control of the {summary['space']} output over {summary['bins']} bins:")
    for name in ("tracking_rmse", "tracking", "smoothness", "energy", "total", "max_bound_violation"):
        print(f"  {name:<20s} {terms[name]:.4g}")
    print(f"written: {Path(arguments.run_dir) / 'control.npz'}, control.json, figures/control.png")
    return 0


def _compare(arguments) -> int:
    from .compare import compare_configs, format_table
    from .errors import ConfigError

    if arguments.steps is not None and arguments.steps < 1:
        raise ConfigError(f"--steps is {arguments.steps}; expected an integer >= 1")
    rows = compare_configs(arguments.configs, arguments.out, arguments.steps, arguments.seed, arguments.overwrite,
                           arguments.quiet)
    print(format_table(rows))
    print(f"written: {Path(arguments.out) / 'compare.csv'}, compare.json, compare.png")
    return 0


def _sweep(arguments) -> int:
    from .sweep import run_sweep

    rows = run_sweep(arguments.sweep_file, arguments.out, arguments.address, arguments.max_parallel,
                     arguments.cpus_per_fit, arguments.gpus_per_fit)
    for row in rows:
        score = row["test_bits_per_spike"] if row["test_bits_per_spike"] is not None else row["test_r_squared"]
        detail = row["error"] if row["status"] == "failed" else f"test score {score}"
        print(f"{row['name']:<40s} {row['status']:<8s} {detail}")
    print(f"written: {Path(arguments.out) / 'sweep.csv'}, sweep.json")
    return 1 if any(row["status"] == "failed" for row in rows) else 0


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
    if "behaviour_r_squared" in metrics:
        _print_behaviour(metrics["behaviour_r_squared"])
    for method in ("ridge", "behaviour_head"):
        decoding = metrics.get("behaviour_decoding", {}).get(method)
        if decoding is not None:
            coverage = decoding["coverage"]
            print(f"behaviour decoded by {method} on test trials: R^2 {decoding['r_squared']['mean']: .4f}, "
                  f"50% interval coverage {coverage['0.5']:.2f}, 90% interval coverage {coverage['0.9']:.2f}")


def _print_behaviour(scores: dict) -> None:
    print("behaviour head on test trials, R^2 averaged over behaviour variables:")
    for path_kind, per_variable in scores.items():
        mean = per_variable["mean"]
        print(f"  {path_kind + ' paths':<50s} {'n/a' if mean is None else f'{mean: .4f}'}")


def _print_co_smoothing(scores: dict) -> None:
    if "reduced_rank_regression" in scores:
        rank = scores["reduced_rank_regression_settings"]["rank"]
        print(f"held-out channels {scores['heldout_channels']} on test trials, R^2 from the held-in channels:")
        print(f"  {'model':<50s} {scores['model']: .4f}")
        print(f"  {f'reduced_rank_regression (rank {rank})':<50s} {scores['reduced_rank_regression']: .4f}")
        return
    print(f"held-out neurons {scores['heldout_channels']} on test trials, co-smoothing bits per spike:")
    for name in ("model", "spike_smoothing", "gpfa"):
        print(f"  {name:<50s} {scores[name]: .4f}")
    for method, decoding in scores.get("behaviour_decoding_r_squared", {}).items():
        print(f"  behaviour decoding R^2 from {method:<22s} {decoding['mean']: .4f}")


def _log_to_terminal(quiet: bool, level: str | None = None) -> None:
    """Send neuroude's log messages to standard error from `level` up.

    Without `level`: warnings only with `quiet`, else progress messages too.
    The run's log file records every message from info up either way, and
    debug messages too with level "debug".
    """
    package_logger = logging.getLogger("neuroude")
    for handler in [h for h in package_logger.handlers if getattr(h, "is_terminal_handler", False)]:
        package_logger.removeHandler(handler)

    handler = logging.StreamHandler(sys.stderr)
    handler.is_terminal_handler = True
    if level is None:
        level = "warning" if quiet else "info"
    threshold = getattr(logging, level.upper())
    handler.setLevel(threshold)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    package_logger.addHandler(handler)
    package_logger.setLevel(min(threshold, logging.INFO))


def main(argv: list[str] | None = None) -> int:
    interrupts = _InterruptRecorder()
    try:
        with interrupts:
            return _run_command(argv)
    except KeyboardInterrupt:
        # Reached when Ctrl-C comes before a command starts, for example while JAX is imported.
        print("neuroude: interrupted", file=sys.stderr)
        return 130
    except ImportError:
        # Ctrl-C while a C extension such as jaxlib initialises surfaces as an ImportError that does not
        # chain the KeyboardInterrupt, so the recorded signal is what tells the two apart.
        # NOTE: NumPy prints the interrupt's traceback itself before raising, and a Ctrl-C that lands in
        # JAX's garbage-collection callback is printed as "Exception ignored" and the command goes on.
        if not interrupts.seen:
            raise
        print("neuroude: interrupted", file=sys.stderr)
        return 130


class _InterruptRecorder:
    """Record SIGINT while raising KeyboardInterrupt as Python's default handler does."""

    def __init__(self):
        self.seen = False
        self._previous = None

    def _handle(self, signum, frame):
        self.seen = True
        signal.default_int_handler(signum, frame)

    def __enter__(self):
        # Only replace the default handler, in the main thread; an ignored SIGINT stays ignored.
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc_info):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def _run_command(argv: list[str] | None) -> int:
    arguments = _parse_arguments(argv)
    _log_to_terminal(getattr(arguments, "quiet", False), arguments.log_level)
    try:
        if arguments.command != "models":
            from .cache import enable_compilation_cache

            enable_compilation_cache()
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
        if arguments.command == "analyze":
            return _analyze(arguments)
        if arguments.command == "data":
            return _data(arguments)
        if arguments.command == "report":
            return _report(arguments)
        if arguments.command == "sample":
            from .workflow import sample_run

            if arguments.n < 1:
                raise NeuroudeError(f"--n is {arguments.n}; expected an integer >= 1")
            print(f"written: {sample_run(arguments.run_dir, arguments.n, arguments.split, arguments.seed)}")
            return 0
        if arguments.command == "control":
            return _control(arguments)
        if arguments.command == "compare":
            return _compare(arguments)
        if arguments.command == "sweep":
            return _sweep(arguments)
    except NeuroudeError as error:
        print(f"neuroude {arguments.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"neuroude {arguments.command}: interrupted{_interrupt_hint(arguments)}", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
