"""Resuming a transformers `Trainer` (TRL's SFT and GRPO trainers) from one of its checkpoints.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from refine.training.trainer_checkpoint import resume_argument
    >>> folder = Path(tempfile.mkdtemp())
    >>> resume_argument(None, folder), resume_argument("latest", folder)     # nothing saved yet: start fresh
    (None, None)
    >>> (folder / "checkpoint-4").mkdir()
    >>> resume_argument("latest", folder), resume_argument(str(folder / "checkpoint-4"), folder) == str(folder / "checkpoint-4")
    (True, True)

The SFT stages (`refine train vlm`, `refine train thinker`) and the thinker's GRPO stage resume
the same way: `resume_from: latest` (or `--resume`) continues from the newest checkpoint, with the
optimizer, schedule, RNG and data position the Trainer saved beside the weights. Their trainers
read the weights with `load_checkpoint_weights` (assigned as the Trainer's `_load_from_checkpoint`).
"""

from __future__ import annotations

from pathlib import Path


def load_checkpoint_weights(trainer, resume_from_checkpoint: str, model=None) -> None:
    """A Trainer's `_load_from_checkpoint` that reads the checkpoint's weights through `from_pretrained`.

    Why: `save_pretrained` writes Qwen2.5-VL in its original key layout (`visual.*`,
    `model.layers.*`) and `from_pretrained` maps the keys back, but the Trainer's own resume loads
    the raw file into the model (transformers 5.x), finds none of the keys and silently keeps the
    current weights. Loading strictly here makes a mismatch an error instead.
    """
    model = model if model is not None else trainer.model
    loaded = type(model).from_pretrained(resume_from_checkpoint, dtype=next(model.parameters()).dtype)
    model.load_state_dict(loaded.state_dict(), strict=True)


def resume_argument(resume_from: str | None, checkpoints: str | Path) -> bool | str | None:
    """`Trainer.train(resume_from_checkpoint=...)` for a config's `resume_from`.

    "latest": True when `checkpoints` holds a checkpoint (the Trainer picks the newest), else None
    (a fresh start: resuming a run that never saved is starting it); a folder: that checkpoint.
    """
    if resume_from == "latest":
        return True if any(Path(checkpoints).glob("checkpoint-*")) else None
    return resume_from
