"""Per-iteration metrics to JSONL (always) and TensorBoard (when asked), written by the main process.

Example:
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> from refine.edit_r1.metrics import MetricsLogger, read_metrics
    >>> folder = Path(tempfile.mkdtemp())
    >>> with MetricsLogger(folder) as log:
    ...     log.write({"iteration": 0, "reward_mean": 0.5})
    ...     log.write({"iteration": 1, "reward_mean": 0.75, "eval_reward": 0.7})
    >>> [row["reward_mean"] for row in read_metrics(folder)]
    [0.5, 0.75]

`metrics.jsonl` has one JSON object per line, one line per iteration (plus the evaluation rows).
On resume, lines of iterations at or after the checkpoint's step are dropped first
(`truncate_after`), so a resumed run's file reads as if it had never stopped.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

FILE = "metrics.jsonl"


class MetricsLogger:
    """Append metric rows to `folder/filename` (metrics.jsonl); mirror numbers to TensorBoard when `tensorboard`."""

    def __init__(self, folder: str | Path, *, tensorboard: bool = False, enabled: bool = True, filename: str = FILE) -> None:
        self.folder = Path(folder)
        self.enabled = enabled
        self.filename = filename
        self._writer = None
        if enabled:
            self.folder.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.folder / "tensorboard"))

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: _jsonable(v) for k, v in row.items()}
        with open(self.folder / self.filename, "a") as handle:
            handle.write(json.dumps(clean, sort_keys=False) + "\n")
        if self._writer is not None:
            step = int(row.get("iteration", 0))
            for key, value in clean.items():
                if key != "iteration" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(key, value, step)
            self._writer.flush()

    def truncate_after(self, iteration: int) -> None:
        """Drop rows with `iteration` >= the given one (a resumed run re-logs them)."""
        path = self.folder / self.filename
        if not self.enabled or not path.is_file():
            return
        kept = [row for row in read_metrics(path) if int(row.get("iteration", -1)) < iteration]
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in kept))
        tmp.replace(path)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "MetricsLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metrics(folder: str | Path) -> list[dict[str, Any]]:
    """Rows of `folder/metrics.jsonl` (or of the file itself), in order; a torn last line is skipped."""
    path = Path(folder)
    path = path / FILE if path.is_dir() else path
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a run killed mid-write leaves at most one partial line
    return rows


def mean(values: Iterable[float]) -> float:
    """Mean of the finite values; NaN when there are none.

    >>> mean([1.0, float("nan"), 3.0])
    2.0
    """
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(finite) / len(finite) if finite else float("nan")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; None reads as "not measured"
    return value
