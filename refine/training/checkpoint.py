"""Atomic training checkpoints: a folder appears complete or not at all, and `latest` names the newest.

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from refine.training.checkpoint import CheckpointWriter, latest_checkpoint, read_tensors
    >>> out = Path(tempfile.mkdtemp())
    >>> with CheckpointWriter(out, step=3) as ckpt:            # written under out/.tmp-checkpoint-000003
    ...     ckpt.save_tensors("trained", {"w": torch.ones(2)})
    ...     ckpt.save_json("state", {"step": 3})
    >>> latest_checkpoint(out).name, read_tensors(latest_checkpoint(out), "trained")["w"].tolist()
    ('checkpoint-000003', [1.0, 1.0])

Layout of a checkpoint root (each trainer picks the root and the files; Edit-R1's shown):
    checkpoint-000010/      trained.safetensors, old.safetensors, ema.safetensors (shadow
                            weights by parameter name), optimizer.pt, scheduler.pt, rng-rank{r}.pt
                            (`rng_state`), state.json (step, data position, counters), lora/ (the
                            EMA adapter in diffusers' format, usable as is), COMPLETE (written last)
    latest                  text file with the name of the newest complete checkpoint

Sharded training (FSDP2): the policies and the optimizer state are written by every process
with torch's distributed checkpoint (`save_distributed` / `read_distributed`: a folder per name,
one file per process plus `.metadata`), each process writing its own shards; nothing is
gathered. They load back in place into tensors of the same sharding (any process count that
torch's resharding supports).

Every trainer (base editor, Edit-R1, inline critic) writes its checkpoints through
`CheckpointWriter` and resumes from `latest_checkpoint`; `rng_state` / `set_rng_state` carry the
Python, NumPy, torch (and CUDA) generators plus any named `torch.Generator` a loop draws from, so
a resumed run repeats what the uninterrupted one would have done, bit for bit.

Why this shape: a run killed at any instant (SIGKILL, OOM, a reward server dying) leaves either
the previous checkpoint or the new one, never a half-written folder that resume would trust.
Everything is first written to `.tmp-checkpoint-N/`, flushed to disk, renamed into place
(`os.replace` is atomic on one filesystem), and only then is `latest` replaced, itself through
a temporary file. Resume trusts only folders holding `COMPLETE`. With several processes, each rank
writes its own RNG file into the shared temporary folder and rank 0 does the rest (the output
directory must be on a filesystem all ranks see, as for any multi-node checkpoint).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from refine.errors import ArtifactError

PREFIX = "checkpoint-"
COMPLETE = "COMPLETE"
LATEST = "latest"


def checkpoint_name(step: int) -> str:
    """The folder name of the checkpoint taken after `step` iterations.

    >>> checkpoint_name(7)
    'checkpoint-000007'
    """
    return f"{PREFIX}{step:06d}"


class CheckpointWriter:
    """Context manager writing one checkpoint atomically (see the module docstring).

    `is_main` / `barrier` come from the caller's accelerator; with one process the defaults apply.
    On an exception inside the block nothing is published and the temporary folder is removed.
    """

    def __init__(
        self,
        output_dir: str | Path,
        step: int,
        *,
        is_main: bool = True,
        barrier: Callable[[], None] = lambda: None,
        keep_last: int | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.step = step
        self.is_main = is_main
        self.barrier = barrier
        self.keep_last = keep_last
        self.final = self.output_dir / checkpoint_name(step)
        self.path = self.output_dir / f".tmp-{checkpoint_name(step)}"

    def __enter__(self) -> "CheckpointWriter":
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(self.path, ignore_errors=True)  # leftovers of a run killed mid-write
            self.path.mkdir(parents=True)
        self.barrier()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.barrier()
        if not self.is_main:
            self.barrier()
            return
        if exc_type is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.barrier()
            return
        _write_atomic(self.path / COMPLETE, f"{self.step}\n")
        _fsync_tree(self.path)
        if self.final.exists():  # re-saving the same step (e.g. the final one): replace it
            shutil.rmtree(self.final)
        os.replace(self.path, self.final)
        _fsync_dir(self.output_dir)
        _write_atomic(self.output_dir / LATEST, self.final.name + "\n")
        if self.keep_last:
            for old in list_checkpoints(self.output_dir)[: -self.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        self.barrier()

    def save_tensors(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        if self.is_main:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(self.path / f"{name}.safetensors"))

    def save_torch(self, name: str, obj: Any, *, every_rank: bool = False) -> None:
        """`torch.save` of `obj` (optimizer/scheduler/RNG state); `every_rank` writes one file per caller."""
        if every_rank or self.is_main:
            torch.save(obj, self.path / f"{name}.pt")

    def save_distributed(self, name: str, state: dict[str, Any]) -> None:
        """Every process writes its shards of `state` (DTensors, nested dicts) to `name/` (collective)."""
        import torch.distributed.checkpoint as dcp

        dcp.save(state, checkpoint_id=str(self.path / name))

    def save_json(self, name: str, data: dict[str, Any]) -> None:
        if self.is_main:
            (self.path / f"{name}.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints in `output_dir`, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.glob(f"{PREFIX}*") if p.is_dir() and (p / COMPLETE).is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The checkpoint named by `latest` when it is complete, else the newest complete one, else None."""
    output_dir = Path(output_dir)
    marker = output_dir / LATEST
    if marker.is_file():
        named = output_dir / marker.read_text().strip()
        if (named / COMPLETE).is_file():
            return named
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def is_complete(folder: str | Path) -> bool:
    """Whether `folder` is a checkpoint `CheckpointWriter` finished (it holds `COMPLETE`)."""
    return (Path(folder) / COMPLETE).is_file()


def read_tensors(folder: str | Path, name: str) -> dict[str, torch.Tensor]:
    file = Path(folder) / f"{name}.safetensors"
    if not file.is_file():
        raise ArtifactError(f"checkpoint {folder} has no {file.name}; it was written by another version or is damaged")
    return load_file(str(file))


def read_torch(folder: str | Path, name: str) -> Any:
    file = Path(folder) / f"{name}.pt"
    if not file.is_file():
        raise ArtifactError(f"checkpoint {folder} has no {file.name}; it was written by another version or is damaged")
    return torch.load(file, map_location="cpu", weights_only=False)


def read_distributed(folder: str | Path, name: str, into: dict[str, Any]) -> dict[str, Any]:
    """Load `name/` written by `CheckpointWriter.save_distributed` in place into `into` (collective); returns it."""
    import torch.distributed.checkpoint as dcp

    path = Path(folder) / name
    if not (path / ".metadata").is_file():
        raise ArtifactError(f"{path}: no distributed checkpoint there (was the run saved without sharding? resume it the same way)")
    dcp.load(into, checkpoint_id=str(path))
    return into


def read_json(folder: str | Path, name: str) -> dict[str, Any]:
    file = Path(folder) / f"{name}.json"
    if not file.is_file():
        raise ArtifactError(f"checkpoint {folder} has no {file.name}; it was written by another version or is damaged")
    return json.loads(file.read_text())


def rng_state(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """The global RNG states (Python, NumPy, torch, CUDA when present) and those of `generators`.

    Saved per process (`save_torch(f"rng-rank{rank}", ..., every_rank=True)`) and restored with
    `set_rng_state`.

    >>> g = torch.Generator().manual_seed(1)
    >>> state = rng_state({"noise": g})
    >>> a = (torch.rand(1, generator=g), torch.rand(1))
    >>> set_rng_state(state, {"noise": g})
    >>> (torch.rand(1, generator=g), torch.rand(1)) == a
    True
    """
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    state["generators"] = {name: g.get_state() for name, g in (generators or {}).items()}
    return state


def set_rng_state(state: dict[str, Any], generators: Mapping[str, torch.Generator] | None = None) -> None:
    """Restore what `rng_state` captured, into the global generators and the named ones."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.random.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, generator in (generators or {}).items():
        if name not in state.get("generators", {}):
            raise ArtifactError(f"the checkpoint's RNG state has no generator {name!r}; it was written by another version")
        generator.set_state(state["generators"][name])


def save_tensors_atomic(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """One safetensors file written to a temporary name and renamed: readers see the old or the new file.

    For artifacts that live outside checkpoint folders (exported weights, stage outputs).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
