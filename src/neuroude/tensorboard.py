"""Optional TensorBoard logging of each training step.

A fit always writes `history.csv`. When a TensorBoard event writer can be
imported (`tensorboardX`, or `torch.utils.tensorboard` from PyTorch), it also
writes the same scalars to `RUN_DIR/tensorboard/`, to be viewed with
`tensorboard --logdir RUN_DIR/tensorboard`. Neither package is a dependency.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
from collections.abc import Iterator

from .runs import RunFolder

logger = logging.getLogger("neuroude")

# Modules that provide a `SummaryWriter(log_dir)` with `add_scalar(tag, value, step)`, tried in order.
WRITER_MODULES = ("tensorboardX", "torch.utils.tensorboard")

# Columns of a history row written as scalars, with their TensorBoard tags.
SCALAR_TAGS = {
    "loss": "elbo/negative_elbo",
    "log_likelihood": "elbo/log_likelihood",
    "kl_initial": "elbo/kl_initial",
    "kl_path": "elbo/kl_path",
    "residual_penalty": "elbo/residual_penalty",
    "beta": "training/beta",
    "grad_norm": "training/grad_norm",
    "learning_rate": "training/learning_rate",
    "skipped_steps": "training/skipped_steps",
    "validation_metric": "validation/metric",
}


def find_summary_writer() -> type | None:
    """Return the first importable `SummaryWriter` class of `WRITER_MODULES`, or None."""
    for name in WRITER_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        writer = getattr(module, "SummaryWriter", None)
        if writer is not None:
            return writer
    return None


class StepWriter:
    """Writer of history rows as TensorBoard scalars; without a `SummaryWriter` it writes nothing."""

    def __init__(self, writer=None):
        self.writer = writer

    def write(self, row: dict) -> None:
        if self.writer is None:
            return
        step = int(row["step"])
        for column, tag in SCALAR_TAGS.items():
            value = row.get(column)
            # A missing validation metric (no evaluation at this step) or a non-finite loss is not plotted.
            if value is None or not math.isfinite(float(value)):
                continue
            self.writer.add_scalar(tag, float(value), step)


@contextlib.contextmanager
def open_tensorboard(run: RunFolder, writer_class: type | None = None) -> Iterator[StepWriter]:
    """Yield a `StepWriter` into `run.root / "tensorboard"`, inactive when no writer class is importable."""
    writer_class = writer_class or find_summary_writer()
    if writer_class is None:
        logger.debug("no TensorBoard writer installed (tensorboardX or torch); metrics go to history.csv only")
        yield StepWriter()
        return

    log_dir = run.root / "tensorboard"
    writer = writer_class(log_dir=str(log_dir))
    logger.info("writing TensorBoard scalars to %s", log_dir)
    try:
        yield StepWriter(writer)
    finally:
        writer.close()
