"""`EditR1Refiner`: load an Edit-R1 LoRA into a white-box `FlowEditor` (the trained policy, ready to edit).

Example:
    >>> from refine.edit_r1.refiner import EditR1Refiner
    >>> refiner = EditR1Refiner("runs/edit_r1/lora")
    >>> refiner.name, refiner.needs_white_box, refiner.returns_white_box
    ('edit_r1', True, True)
    >>> from refine.editor import compose                                   # doctest: +SKIP
    >>> from refine.rollout.flow_editor import FlowEditor                   # doctest: +SKIP
    >>> from refine.backbones.shapes import load_shapes_backbone            # doctest: +SKIP
    >>> editor = compose(FlowEditor(load_shapes_backbone()), EditR1Refiner())   # the bundled ShapeEdit LoRA  # doctest: +SKIP

The adapter is loaded into the editor's backbone *in place* (like the inline critic installs its
processor): the refined editor is the same `FlowEditor` object, still white-box, so further
white-box refiners can follow it in `compose`. Loading twice into one backbone is refused
(`ArtifactError`): build a fresh editor per refined variant. On a real pipeline the same folder
works with diffusers directly: ``pipe.load_lora_weights("runs/edit_r1/lora")``.
"""

from __future__ import annotations

from pathlib import Path

from refine.training.lora import load_lora_into_editor

BUNDLED_SHAPES_LORA = Path(__file__).resolve().parent.parent / "assets" / "edit-r1-shapes"
"""The Edit-R1 LoRA trained on the bundled ShapeEdit editor (see its README for the command)."""


class EditR1Refiner:
    """A white-box refiner that loads an Edit-R1 LoRA (a folder with `pytorch_lora_weights.safetensors`).

    Args:
        path: the LoRA folder (a run's `lora/`, a checkpoint's `lora/`); None: the bundled
            ShapeEdit LoRA (`refine/assets/edit-r1-shapes`).
        scale: LoRA strength (1.0 = as trained; 0 disables it).
        adapter_name: the peft adapter name inside the transformer.
    """

    name = "edit_r1"
    needs_white_box = True
    returns_white_box = True

    def __init__(self, path: str | Path | None = None, scale: float = 1.0, adapter_name: str = "edit_r1") -> None:
        self.path = Path(path) if path is not None else BUNDLED_SHAPES_LORA
        self.scale = float(scale)
        self.adapter_name = adapter_name

    def __call__(self, editor):
        load_lora_into_editor(editor, self.path, adapter_name=self.adapter_name, scale=self.scale, refiner=self.name)
        return editor

    def __repr__(self) -> str:
        return f"EditR1Refiner(path={str(self.path)!r}, scale={self.scale})"
