"""Model comparison: fit several run configurations to the same data and score them side by side.

Every configuration must name the same data (the whole `data` section,
including the split fractions) and the same `evaluation` settings. All runs
use one seed, so they share the train/validation/test split, the minibatch
order and the noise draws of evaluation. Each run is fitted with
`workflow.fit_run` into its own folder under the output folder. The table
contains, per run:

- `heldout_elbo`: the ELBO per test trial in nats, `E_q[log p(y | x)] - KL(q(x0 | y) || p(x0)) - KL_path`,
  with beta = 1 and `evaluation.n_samples` posterior paths per trial,
- `heldout_log_likelihood` and `bits_per_spike` (Poisson observations) or
  `r_squared` (Gaussian) of the prior predictions on the test trials, as in `metrics.json`,
- `parameters`: the number of trainable scalars,
- `fit_seconds`: the training loop's wall-clock time.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .config import RunConfig, load_config
from .dynamics.parameters import trainable_filter
from .errors import ConfigError
from .runs import RunFolder, write_json, write_text

logger = logging.getLogger("neuroude")

COLUMNS = (
    "name", "drift", "diffusion", "heldout_elbo", "heldout_log_likelihood", "bits_per_spike", "r_squared",
    "parameters", "fit_seconds", "steps_run", "run_folder",
)


def check_comparable(configs: dict[str, RunConfig]) -> None:
    """Raise ConfigError unless every configuration has the same data and evaluation sections as the first."""
    names = list(configs)
    first = configs[names[0]]
    for name in names[1:]:
        for section in ("data", "evaluation"):
            reference = getattr(first, section).model_dump()
            other = getattr(configs[name], section).model_dump()
            if other != reference:
                differing = sorted(key for key in reference if reference[key] != other.get(key))
                raise ConfigError(
                    f"config {name!r} has a different {section} section from {names[0]!r} "
                    f"(keys {differing}: {[other[key] for key in differing]} against "
                    f"{[reference[key] for key in differing]}); models can only be compared on the same "
                    f"{'data and split' if section == 'data' else 'evaluation settings'}"
                )


def count_parameters(model) -> int:
    """Return the number of trainable scalars (frozen mechanistic constants excluded)."""
    trainable, _ = eqx.partition(model, trainable_filter(model))
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(trainable)))


@eqx.filter_jit
def _elbo_terms(model, y, stimulus, mask, t0, bin_width, key, n_samples):
    return model.loss(y, stimulus, mask, t0, bin_width, key, 1.0, n_samples)


def heldout_elbo(model, recording, test_indices, n_samples: int, seed: int) -> float:
    """Return the ELBO per trial (nats) on the test trials, with beta = 1 and `n_samples` paths per trial."""
    test = recording.select(test_indices)
    y = jnp.asarray(test.y, jnp.float32)
    stimulus = jnp.asarray(test.u, jnp.float32) if test.u is not None else jnp.zeros(y.shape[:2] + (0,), y.dtype)
    mask = jnp.asarray(test.mask, y.dtype) if test.mask is not None else jnp.ones_like(y)
    loss, _ = _elbo_terms(model, y, stimulus, mask, jnp.float32(test.ts[0]), float(test.dt),
                          jax.random.PRNGKey(seed), n_samples)
    return -float(loss)


def _run_names(paths: list[Path]) -> list[str]:
    names = []
    for path in paths:
        name = path.stem
        suffix = 2
        while name in names:
            name = f"{path.stem}-{suffix}"
            suffix += 1
        names.append(name)
    return names


def compare_configs(
    config_paths: list[str | os.PathLike],
    out: str | os.PathLike,
    steps: int | None = None,
    seed: int | None = None,
    overwrite: bool = False,
    quiet: bool = False,
) -> list[dict]:
    """Fit each configuration into `out/<config name>` and write `compare.csv`, `compare.json` and `compare.png`.

    `seed` (default: the first configuration's) replaces every configuration's
    seed. Returns the table's rows in the order of `config_paths`.
    """
    from .workflow import fit_run

    if len(config_paths) < 2:
        raise ConfigError(f"compare got {len(config_paths)} configuration; expected at least 2 to compare")
    paths = [Path(path) for path in config_paths]
    configs = dict(zip(_run_names(paths), (load_config(path) for path in paths)))
    check_comparable(configs)
    common_seed = next(iter(configs.values())).seed if seed is None else seed
    for name, config in configs.items():
        if config.seed != common_seed:
            logger.warning("config %r: seed %d replaced by the common seed %d", name, config.seed, common_seed)
        config.seed = common_seed

    out = Path(out)
    # Every run folder is checked before the first fit, so an existing run cannot stop the comparison halfway.
    for name in configs:
        RunFolder(out / name).check_writable(resume=False, overwrite=overwrite)
    rows = []
    for name, config in configs.items():
        logger.info("fitting %s", name)
        run = fit_run(config, out / name, overwrite=overwrite, quiet=quiet, steps=steps)
        rows.append(_row(name, run, config))

    write_json(out / "compare.json", {"seed": common_seed, "runs": rows})
    write_text(out / "compare.csv", _csv(rows))
    plot_comparison(rows, out / "compare.png")
    return rows


def _row(name: str, run, config: RunConfig) -> dict:
    test_scores = run.metrics["test"]["model"]
    training = run.metrics.get("training", {})
    return {
        "name": name,
        "drift": config.model.drift,
        "diffusion": config.model.diffusion,
        "heldout_elbo": heldout_elbo(run.model, run.recording, run.split["test"], config.evaluation.n_samples,
                                     config.seed),
        "heldout_log_likelihood": test_scores.get("log_likelihood"),
        "bits_per_spike": test_scores.get("bits_per_spike"),
        "r_squared": test_scores.get("r_squared"),
        "parameters": count_parameters(run.model),
        "fit_seconds": training.get("seconds"),
        "steps_run": training.get("steps_run"),
        "run_folder": str(run.folder.root),
    }


def _csv(rows: list[dict]) -> str:
    stream = io.StringIO()
    writer = csv.DictWriter(stream, fieldnames=list(COLUMNS))
    writer.writeheader()
    writer.writerows(rows)
    return stream.getvalue()


def format_table(rows: list[dict]) -> str:
    """Return the table as aligned text, with n/a for a score the observation model does not have."""
    columns = ("name", "heldout_elbo", "heldout_log_likelihood", "bits_per_spike", "r_squared", "parameters",
             "fit_seconds")
    cells = [list(columns)]
    for row in rows:
        cells.append([_format_cell(row[column]) for column in columns])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in cells)


def _format_cell(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def plot_comparison(rows: list[dict], path) -> Path:
    """Draw one bar chart per compared quantity, one bar per run."""
    from .plots import _save, plt

    quantities = [("heldout_elbo", "held-out ELBO (nats/trial)"), ("parameters", "trainable parameters"),
                  ("fit_seconds", "fit time (s)")]
    score = "bits_per_spike" if rows[0]["bits_per_spike"] is not None else "r_squared"
    quantities.insert(1, (score, "held-out bits per spike" if score == "bits_per_spike" else "held-out R^2"))
    names = [row["name"] for row in rows]
    figure, axes = plt.subplots(1, len(quantities), figsize=(3.2 * len(quantities), 3.2))
    for axis, (column, label) in zip(axes, quantities):
        values = [np.nan if row[column] is None else row[column] for row in rows]
        axis.bar(range(len(rows)), values, color=[f"C{i}" for i in range(len(rows))])
        axis.set_xticks(range(len(rows)), names, rotation=30, ha="right")
        axis.set_title(label, fontsize="medium")
    figure.tight_layout()
    return _save(figure, path)
