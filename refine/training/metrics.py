"""Training metrics to JSONL (always), TensorBoard and wandb (when asked), written by the main process.

Example:
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> from refine.training.metrics import MetricsLogger, read_metrics
    >>> folder = Path(tempfile.mkdtemp())
    >>> with MetricsLogger(folder) as log:
    ...     log.write({"iteration": 0, "reward_mean": 0.5})
    ...     log.write({"iteration": 1, "reward_mean": 0.75, "eval_reward": 0.7})
    >>> [row["reward_mean"] for row in read_metrics(folder)]
    [0.5, 0.75]

`metrics.jsonl` has one JSON object per line, one line per logged step (plus the evaluation rows).
Rows carry their step under `step_key` ("iteration" for Edit-R1, "step" for the base editor and
the inline critic). A run calls `resume_at(step)` once: a fresh run (None) starts an empty file, a
resumed one drops the rows past its checkpoint's step, so the file reads as if the run had never
stopped.

wandb is optional (not a dependency of refine): `MetricsLogger(..., wandb_project="name")` logs
the same rows to that project when the `wandb` package is installed and says how to install it
otherwise; the run id is kept in `folder/wandb-run-id` so a resumed run continues the same wandb run.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path
from typing import Any, Callable, Iterable

from refine.errors import ConfigError

FILE = "metrics.jsonl"
WANDB_ID = "wandb-run-id"


class MetricsLogger:
    """Append metric rows to `folder/filename` (metrics.jsonl); mirror numbers to TensorBoard / wandb when asked."""

    def __init__(
        self,
        folder: str | Path,
        *,
        tensorboard: bool = False,
        wandb_project: str | None = None,
        enabled: bool = True,
        filename: str = FILE,
        step_key: str = "iteration",
        run_config: dict[str, Any] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.enabled = enabled
        self.filename = filename
        self.step_key = step_key
        self._writer = None
        self._wandb = None
        if enabled:
            self.folder.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter  # lazy: imports tensorboard, needed only when asked

                self._writer = SummaryWriter(str(self.folder / "tensorboard"))
            if wandb_project:
                self._wandb = _start_wandb(self.folder, wandb_project, run_config)

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: _jsonable(v) for k, v in row.items()}
        with open(self.folder / self.filename, "a") as handle:
            handle.write(json.dumps(clean, sort_keys=False, default=_json_default) + "\n")
        step = int(row.get(self.step_key, 0) or 0)
        numbers = {k: v for k, v in _scalars(clean).items() if k != self.step_key}
        if self._writer is not None:
            for key, value in numbers.items():
                self._writer.add_scalar(key, value, step)
            self._writer.flush()
        if self._wandb is not None:
            self._wandb.log(numbers, step=step)

    def resume_at(self, step: int | None) -> None:
        """Start of a run: None (fresh) empties the file; a step drops the rows logged after it."""
        if step is None:
            if self.enabled:
                (self.folder / self.filename).unlink(missing_ok=True)
            return
        self.drop(lambda row: int(row.get(self.step_key, -1) or 0) > step)

    def drop(self, predicate: Callable[[dict[str, Any]], bool]) -> None:
        """Remove the rows for which `predicate` holds (a resumed run re-logs them)."""
        path = self.folder / self.filename
        if not self.enabled or not path.is_file():
            return
        kept = [row for row in read_metrics(path) if not predicate(row)]
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in kept))
        tmp.replace(path)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

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


def _start_wandb(folder: Path, project: str, run_config: dict[str, Any] | None):
    """A wandb run for `project`, resumed when `folder` already names one."""
    try:
        wandb = importlib.import_module("wandb")  # optional: installed by users who want it
    except ImportError:
        raise ConfigError(f"log to wandb project {project!r}: the wandb package is not installed; `pip install wandb` or turn wandb off") from None
    id_file = folder / WANDB_ID
    run_id = id_file.read_text().strip() if id_file.is_file() else wandb.util.generate_id()
    id_file.write_text(run_id + "\n")
    return wandb.init(project=project, id=run_id, resume="allow", dir=str(folder), config=run_config or {})


def _scalars(row: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numbers of a row, nested dicts flattened with "/" (the base editor's `eval` rows)."""
    out: dict[str, float] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_scalars(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = value
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; None reads as "not measured"
    return value


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to a metrics row")
