"""`MultiTurnRefiner`: load an MT-EditFlow LoRA into a white-box `FlowEditor` (the trained policy, ready to edit).

Example:
    >>> from refine.multiturn.refiner import MultiTurnRefiner
    >>> refiner = MultiTurnRefiner("runs/multiturn/lora")
    >>> refiner.name, refiner.needs_white_box, refiner.returns_white_box
    ('multiturn', True, True)
    >>> from refine.editor import compose                                          # doctest: +SKIP
    >>> from refine.rollout.flow_editor import FlowEditor                          # doctest: +SKIP
    >>> from refine.backbones.shapes import load_shapes_backbone                   # doctest: +SKIP
    >>> editor = compose(FlowEditor(load_shapes_backbone()), MultiTurnRefiner("runs/multiturn/lora"))  # doctest: +SKIP

As Edit-R1's refiner does, the adapter is loaded into the editor's backbone *in place*: the
refined editor is the same `FlowEditor`, still white-box, so other white-box refiners can follow
it in `compose`, and a multi-turn benchmark (shapes-mt) feeds each turn's output back to it. On a
real pipeline the folder works with diffusers directly: ``pipe.load_lora_weights(folder)``.
`path=None` loads the bundled ShapeEdit LoRA (`refine/assets/multiturn-shapes`: turn-3 O on
shapes-mt +0.070 [+0.050, +0.090] over the bundled editor, 4 seeds; its README has the commands).
"""

from __future__ import annotations

from pathlib import Path

from refine.training.lora import load_lora_into_editor

BUNDLED_SHAPES_LORA = Path(__file__).resolve().parent.parent / "assets" / "multiturn-shapes"
"""The MT-EditFlow LoRA trained on the bundled ShapeEdit editor (see its README for the command)."""


class MultiTurnRefiner:
    """A white-box refiner that loads an MT-EditFlow LoRA (a folder with `pytorch_lora_weights.safetensors`).

    Args:
        path: the LoRA folder (a run's `lora/` or a checkpoint's `lora/`); None: the bundled one.
        scale: LoRA strength (1.0 = as trained; 0 disables it).
        adapter_name: the peft adapter name inside the transformer.
    """

    name = "multiturn"
    needs_white_box = True
    returns_white_box = True

    def __init__(self, path: str | Path | None = None, scale: float = 1.0, adapter_name: str = "multiturn") -> None:
        self.path = Path(path) if path is not None else BUNDLED_SHAPES_LORA
        self.scale = float(scale)
        self.adapter_name = adapter_name

    def __call__(self, editor):
        load_lora_into_editor(editor, self.path, adapter_name=self.adapter_name, scale=self.scale, refiner=self.name)
        return editor

    def __repr__(self) -> str:
        return f"MultiTurnRefiner(path={str(self.path)!r}, scale={self.scale})"
