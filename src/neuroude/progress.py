"""The one progress reporter of long work: a rich progress bar, silent with `quiet`."""

from __future__ import annotations

import math

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class FitProgress:
    """Progress bar of a fit: step, loss terms, validation metric and skipped steps."""

    def __init__(self, total_steps: int, quiet: bool = False, start: int = 0):
        self.quiet = quiet
        console = Console(stderr=True)
        # A bar redrawn into a file leaves a cut-off last line; the log lines already record each evaluation.
        self._progress = Progress(
            TextColumn("[bold]fit"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=quiet or not console.is_terminal,
            transient=False,
        )
        self._task = self._progress.add_task("fit", total=total_steps, completed=start, status="compiling")
        self._metric = "-"

    def __enter__(self):
        self._progress.__enter__()
        return self

    def __exit__(self, *exc_info):
        return self._progress.__exit__(*exc_info)

    def update(self, step: int, terms: dict, metric: float | None, best_metric: float, skipped: int) -> None:
        if metric is not None:
            self._metric = f"{metric:.3f} (best {best_metric:.3f})"
        status = (
            f"loss {terms['loss']:.1f}  ll {terms['log_likelihood']:.1f}  "
            f"kl0 {terms['kl_initial']:.2f}  klpath {terms['kl_path']:.2f}  "
            f"beta {terms['beta']:.2f}  val {self._metric}"
        )
        if skipped:
            status += f"  skipped {skipped}"
        if not math.isfinite(terms["loss"]):
            status += "  [red]non-finite"
        self._progress.update(self._task, completed=step, status=status)
