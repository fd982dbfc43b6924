"""Sweeps: many independent fits (seeds, sessions, hyperparameter grids) run as Ray tasks.

A sweep file is YAML with these keys, all optional:

    base: configs/receptor-neuron.yaml   # one run configuration (default: the packaged one)
    configs: [a.yaml, b.yaml]            # or several, each combined with the whole grid
    overrides:                           # dotted keys set in every run
      training.steps: 300
    grid:                                # dotted keys and their values; every combination is fitted
      training.learning_rate: [1.0e-3, 3.0e-3]
      seed: [0, 1, 2]

Relative paths are read from the sweep file's folder. Each combination is fitted
by `workflow.fit_run` into its own folder under the output folder, named after
its config and grid values (`learning_rate=0.001__seed=0`). Every configuration
is validated before the first fit starts. A failed fit is recorded with its
error and the others go on. Running the sweep again skips the runs that have
`metrics.json`, resumes those with a last checkpoint and starts the rest anew.
"""

from __future__ import annotations

import csv
import difflib
import io
import itertools
import json
import logging
import math
import os
import re
import time
import traceback
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .config import RunConfig, _resolve_data_path, load_config, parse_config
from .errors import ConfigError, DataFileError, NeuroudeError
from .runs import RunFolder, write_json, write_text

logger = logging.getLogger("neuroude")

SUMMARY_COLUMNS = (
    "name", "status", "config", "validation_bits_per_spike", "validation_r_squared", "test_bits_per_spike",
    "test_r_squared", "test_log_likelihood", "steps_run", "fit_seconds", "error", "run_folder",
)


class SweepFile(BaseModel):
    """Contents of a sweep file."""

    model_config = ConfigDict(extra="forbid")

    base: str | None = Field(None, description="run configuration combined with the grid")
    configs: list[str] = Field(default_factory=list, description="run configurations, each combined with the grid")
    overrides: dict[str, Any] = Field(default_factory=dict, description="dotted keys set in every run")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="dotted keys and the values to try")

    @field_validator("overrides", "grid")
    @classmethod
    def _check_keys(cls, settings: dict) -> dict:
        # A field validator, so a misspelt setting is reported together with unknown sweep keys.
        for key in settings:
            check_override_key(key)
        return settings

    @model_validator(mode="after")
    def _check(self):
        if self.base is not None and self.configs:
            raise ValueError("the sweep sets both 'base' and 'configs'; expected one of them")
        for key, values in self.grid.items():
            if not values:
                raise ValueError(f"grid key {key!r} has no values; expected a list of at least one value")
        for key in set(self.grid) & set(self.overrides):
            raise ValueError(f"key {key!r} is in both 'grid' and 'overrides'; expected it in one of them")
        return self


@dataclass
class Combination:
    """One fit of a sweep: its folder name, source configuration, grid values and validated configuration."""

    name: str
    source: str
    values: dict[str, Any]
    config: RunConfig = field(repr=False)


def _field_sections(annotation) -> list[type[BaseModel]]:
    candidates = typing.get_args(annotation) or (annotation,)
    return [candidate for candidate in candidates if isinstance(candidate, type) and issubclass(candidate, BaseModel)]


def _is_mapping(annotation) -> bool:
    return any(typing.get_origin(candidate) is dict for candidate in (typing.get_args(annotation) or (annotation,)))


def check_override_key(key: str) -> None:
    """Raise ValueError unless `key` (such as "training.learning_rate") names a setting of RunConfig.

    A key may also name one entry of a mapping setting, such as
    "model.constants.tau".
    """
    section: type[BaseModel] = RunConfig
    parts = key.split(".")
    for position, part in enumerate(parts):
        fields = section.model_fields
        if part not in fields:
            where = ".".join(parts[:position]) or "the top level"
            guess = difflib.get_close_matches(part, list(fields), n=1)
            hint = f" Did you mean {guess[0]!r}?" if guess else ""
            raise ValueError(
                f"override key {key!r} is not a RunConfig setting: {where} has no key {part!r}; "
                f"allowed keys there: {', '.join(sorted(fields))}.{hint}"
            )
        annotation = fields[part].annotation
        remaining = len(parts) - position - 1
        if remaining == 0:
            return
        if remaining == 1 and _is_mapping(annotation):
            return
        sections = _field_sections(annotation)
        if not sections:
            raise ValueError(f"override key {key!r} goes below {'.'.join(parts[:position + 1])!r}, which is a value")
        section = sections[0]


def _set_dotted(raw: dict, key: str, value) -> None:
    parts = key.split(".")
    target = raw
    for part in parts[:-1]:
        if not isinstance(target.get(part), dict):
            target[part] = {}
        target = target[part]
    target[parts[-1]] = value


def load_sweep(path: str | os.PathLike) -> SweepFile:
    """Read and validate a sweep file, raising ConfigError with every problem found."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DataFileError(f"sweep file {path} not found") from None
    except IsADirectoryError:
        raise DataFileError(f"sweep file {path} is a directory; expected a YAML file") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"sweep file {path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"sweep file {path} contains a {type(raw).__name__}; expected a mapping such as 'grid: ...'")
    try:
        return SweepFile.model_validate(raw)
    except pydantic.ValidationError as error:
        problems = []
        for item in error.errors():
            where = ".".join(str(part) for part in item["loc"])
            if item["type"] == "extra_forbidden":
                allowed = ", ".join(SweepFile.model_fields)
                guess = difflib.get_close_matches(where, list(SweepFile.model_fields), n=1)
                hint = f" Did you mean {guess[0]!r}?" if guess else ""
                problems.append(f"unknown sweep key {where!r}; allowed keys: {allowed}.{hint}")
            else:
                message = item["msg"].removeprefix("Value error, ")
                problems.append(f"{where}: {message}" if where else message)
        raise ConfigError(f"invalid sweep file {path}:\n  " + "\n  ".join(problems)) from None


def _value_text(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text) or "empty"


def _short_keys(keys: list[str]) -> dict[str, str]:
    # The last part of a dotted key is readable; the whole key is kept where two last parts coincide.
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return {key: short if last.count(short) == 1 else key for key, short in zip(keys, last)}


def _run_name(source: str | None, values: dict, short: dict[str, str]) -> str:
    parts = [f"{short[key]}={_value_text(value)}" for key, value in values.items()]
    if source is not None:
        parts.insert(0, source)
    return "__".join(parts) or "run"


def expand_sweep(sweep: SweepFile, folder: str | os.PathLike = ".") -> list[Combination]:
    """Return every combination of the sweep's configurations and grid values, each validated.

    Raises ConfigError naming the combination whose configuration is invalid,
    or when two combinations would share a run folder.
    """
    folder = Path(folder)
    sources = [folder / path for path in sweep.configs] or [folder / sweep.base if sweep.base else None]
    stems = [source.stem if source is not None else "receptor-neuron" for source in sources]
    if len(set(stems)) < len(stems):
        raise ConfigError(f"sweep configs {sweep.configs} share file names; expected one run name per config")

    keys = list(sweep.grid)
    short = _short_keys(keys)
    combinations = []
    for source, stem in zip(sources, stems):
        base = load_config(source) if source is not None else RunConfig()
        for point in itertools.product(*(sweep.grid[key] for key in keys)):
            values = dict(zip(keys, point))
            raw = base.model_dump(mode="json")
            for key, value in {**sweep.overrides, **values}.items():
                _set_dotted(raw, key, value)
            name = _run_name(stem if len(sources) > 1 else None, values, short)
            try:
                config = parse_config(raw)
            except ConfigError as error:
                raise ConfigError(f"sweep run {name!r} ({stem}, {values}): {error}") from None
            _resolve_data_path(config, folder)
            combinations.append(Combination(name, str(source) if source else "packaged default", values, config))

    names = [combination.name for combination in combinations]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"sweep runs {duplicates} would share a folder; expected distinct grid values")
    return combinations


def import_ray():
    """Import Ray, raising ConfigError with the install command when it is missing."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "neuroude sweep runs its fits with Ray, which is not installed; install neuroude[sweep] "
            "(pip install 'neuroude[sweep]')"
        ) from None
    return ray


def _finished_row(run: RunFolder) -> dict:
    metrics = json.loads(run.metrics.read_text())
    training = metrics.get("training", {})
    row = {"status": "done", "steps_run": training.get("steps_run"), "fit_seconds": training.get("seconds")}
    for split in ("validation", "test"):
        scores = metrics.get(split, {}).get("model", {})
        for name in ("bits_per_spike", "r_squared", "log_likelihood"):
            if f"{split}_{name}" in SUMMARY_COLUMNS:
                row[f"{split}_{name}"] = scores.get(name)
    return row


def fit_combination(config_json: dict, out: str, quiet: bool = True) -> dict:
    """Fit one combination into `out` and return its summary fields; errors are returned, not raised.

    A run with a last checkpoint is resumed, and anything else in `out` is replaced.
    """
    from .cache import enable_compilation_cache
    from .workflow import fit_run

    # Fits that differ only in values (seeds, learning rates) compile to the same programs, which the
    # cache shares between the worker processes.
    enable_compilation_cache()
    run = RunFolder(out)
    config = RunConfig.model_validate(config_json)
    try:
        resume = run.last_checkpoint.is_file() and run.config.is_file()
        fit_run(config, out, resume=resume, overwrite=not resume, quiet=quiet)
        return _finished_row(run)
    except Exception as error:
        # The sweep goes on, so the error is returned with the innermost frame that shows where the fit failed.
        where = traceback.extract_tb(error.__traceback__)[-1]
        return {"status": "failed",
                "error": f"{type(error).__name__}: {error} (at {Path(where.filename).name}:{where.lineno})"}


def _check_saved_config(combination: Combination, run: RunFolder) -> str | None:
    """Return an error when `run` contains a fit of another configuration, which a rerun must not mix in."""
    if not run.config.is_file():
        return None
    try:
        saved = load_config(run.config, saved_run=True)
    except NeuroudeError as error:
        return f"{run.config} could not be read ({error}); delete the folder to fit this combination again"
    exclude = {"training": {"steps"}}
    if saved.model_dump(exclude=exclude) != combination.config.model_dump(exclude=exclude):
        return (f"{run.root} holds a fit of a different configuration; delete the folder or choose another "
                "--out to fit this combination")
    return None


@dataclass
class SweepSummary:
    """Rows of the summary table, written to sweep.csv and sweep.json after every finished fit."""

    out: Path
    combinations: list[Combination]
    rows: dict[str, dict] = field(default_factory=dict)

    def record(self, combination: Combination, result: dict) -> None:
        row = {column: None for column in SUMMARY_COLUMNS}
        row.update(name=combination.name, config=combination.source,
                   run_folder=str(self.out / combination.name), **result)
        self.rows[combination.name] = {**row, "overrides": combination.values}
        self.write()

    def ordered(self) -> list[dict]:
        return [self.rows[c.name] for c in self.combinations if c.name in self.rows]

    def write(self) -> None:
        rows = self.ordered()
        write_json(self.out / "sweep.json", {"runs": [_json_row(row) for row in rows]})
        write_text(self.out / "sweep.csv", _csv(rows, [key for c in self.combinations[:1] for key in c.values]))


def _json_row(row: dict) -> dict:
    # Strict JSON has no NaN or infinity; a diverged score is written as null.
    return {key: None if isinstance(value, float) and not math.isfinite(value) else value
            for key, value in row.items()}


def _csv(rows: list[dict], keys: list[str]) -> str:
    stream = io.StringIO()
    writer = csv.writer(stream)
    writer.writerow(["name", *keys, *SUMMARY_COLUMNS[1:]])
    for row in rows:
        values = [json.dumps(row["overrides"][key]) for key in keys]
        cells = ["" if row[column] is None else row[column] for column in SUMMARY_COLUMNS[1:]]
        writer.writerow([row["name"], *values, *cells])
    return stream.getvalue()


def run_sweep(
    sweep_path: str | os.PathLike,
    out: str | os.PathLike,
    address: str | None = None,
    max_parallel: int | None = None,
    cpus_per_fit: float = 1.0,
    gpus_per_fit: float = 0.0,
) -> list[dict]:
    """Fit every combination of a sweep file as a Ray task and return the summary rows.

    Without `address`, the fits run on a local Ray instance started here with
    `max_parallel * cpus_per_fit` CPUs (default: every CPU of the machine). A
    Ray instance already started in this process is used as it is. With
    `address` ("ray://host:10001" or "auto"), they run on that cluster, whose
    workers need neuroude installed and the data files at the same paths.
    """
    if max_parallel is not None and max_parallel < 1:
        raise ConfigError(f"--max-parallel is {max_parallel}; expected an integer >= 1")
    if cpus_per_fit <= 0 or gpus_per_fit < 0:
        raise ConfigError(f"--cpus-per-fit is {cpus_per_fit} and --gpus-per-fit {gpus_per_fit}; "
                          "expected a positive number of CPUs and zero or more GPUs")
    sweep_path = Path(sweep_path)
    combinations = expand_sweep(load_sweep(sweep_path), sweep_path.parent)
    ray = import_ray()

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = SweepSummary(out, combinations)
    pending = []
    for combination in combinations:
        run = RunFolder(out / combination.name)
        problem = _check_saved_config(combination, run)
        if problem is not None:
            summary.record(combination, {"status": "failed", "error": problem})
        elif run.metrics.is_file():
            summary.record(combination, {**_finished_row(run), "status": "skipped"})
        else:
            pending.append(combination)

    if pending:
        started_here = _start_ray(ray, address, max_parallel, cpus_per_fit)
        try:
            _run_tasks(ray, pending, summary, max_parallel or len(pending), cpus_per_fit, gpus_per_fit)
        finally:
            if started_here:
                ray.shutdown()
    failed = sum(row["status"] == "failed" for row in summary.ordered())
    logger.info("sweep finished: %d runs, %d failed; summary in %s", len(combinations), failed, out / "sweep.csv")
    return summary.ordered()


def _start_ray(ray, address: str | None, max_parallel: int | None, cpus_per_fit: float) -> bool:
    """Connect to Ray; return whether this call started the instance (and so must shut it down)."""
    if ray.is_initialized():
        logger.info("using the Ray instance already running in this process")
        return False
    if address is not None:
        # NOTE: the tests only use a local instance; connecting to a remote cluster is not tested.
        logger.info("connecting to the Ray cluster at %s", address)
        ray.init(address=address, logging_level=logging.WARNING)
        return True
    cpus = os.cpu_count() or 1
    if max_parallel is not None:
        cpus = max_parallel * cpus_per_fit
    cpus = max(math.ceil(cpus), math.ceil(cpus_per_fit))
    logger.info("starting a local Ray instance with %d CPUs", cpus)
    ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING)
    return True


def _run_tasks(ray, pending: list[Combination], summary: SweepSummary, max_parallel: int, cpus_per_fit: float,
               gpus_per_fit: float) -> None:
    """Submit at most `max_parallel` fits at a time and record each result as it arrives."""
    task = ray.remote(fit_combination).options(num_cpus=cpus_per_fit, num_gpus=gpus_per_fit, max_retries=0)
    queue = list(pending)
    running = {}
    started = {}
    while queue or running:
        while queue and len(running) < max_parallel:
            combination = queue.pop(0)
            reference = task.remote(combination.config.model_dump(mode="json"), str(summary.out / combination.name))
            running[reference] = combination
            started[combination.name] = time.perf_counter()
            logger.info("started %s", combination.name)

        finished, _ = ray.wait(list(running), num_returns=1)
        combination = running.pop(finished[0])
        try:
            result = ray.get(finished[0])
        except ray.exceptions.RayError as error:
            # The worker died or the task could not run; the fit's own errors come back in `result`.
            result = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
        logger.info("%s %s after %.0f s", combination.name, result["status"],
                    time.perf_counter() - started[combination.name])
        summary.record(combination, result)
