"""A transformers `TrainerCallback` that writes every Trainer log through the shared `MetricsLogger`.

Example:
    >>> import tempfile
    >>> from types import SimpleNamespace
    >>> from refine.training.metrics import MetricsLogger, read_metrics
    >>> from refine.training.trainer_metrics import MetricsCallback
    >>> folder = tempfile.mkdtemp()
    >>> callback = MetricsCallback(MetricsLogger(folder, step_key="step"), extra=lambda state, model, row: {"double": 2 * row["loss"]})
    >>> callback.on_log(None, SimpleNamespace(global_step=3), None, logs={"loss": 0.5})
    >>> read_metrics(folder)
    [{'step': 3, 'loss': 0.5, 'double': 1.0}]

The SFT stages (`refine train vlm`, `refine train thinker --stage sft`) drive TRL's SFTTrainer; its
logs reach `metrics.jsonl` the way every other trainer's rows do (one writer, one format).
Rows are appended: a resumed Trainer logs from its checkpoint's step on.
"""

from __future__ import annotations

from typing import Any, Callable

from refine._compat import ensure_torchvision_importable
from refine.training.metrics import MetricsLogger

ensure_torchvision_importable()  # before transformers touches torchvision (see refine._compat)

from transformers import TrainerCallback  # noqa: E402


class MetricsCallback(TrainerCallback):
    """Row ``{"step": global_step, **logs}`` per Trainer log; `extra(state, model, row)` may add fields."""

    def __init__(self, logger: MetricsLogger, extra: Callable[[Any, Any, dict], dict] | None = None) -> None:
        self.logger = logger
        self.extra = extra

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        row = {"step": state.global_step, **(logs or {})}
        if self.extra is not None:
            row.update(self.extra(state, model, row))
        self.logger.write(row)
