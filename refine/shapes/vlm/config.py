"""Config of one SFT stage of the ShapeEdit VLM (`refine train vlm`; presets in examples/configs/vlm/).

Example:
    >>> from refine.shapes.vlm.config import VLMTrainConfig
    >>> VLMTrainConfig(max_steps=10).model.size().hidden_size
    256
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from pydantic import Field

from refine.config import RefineConfig
from refine.shapes.vlm.data import VLMDataConfig
from refine.shapes.vlm.model import VLMSize
from refine.shapes.vlm.tower import TowerPretrainConfig


class VLMModelConfig(RefineConfig):
    """Sizes of a fresh model (ignored with `init_from`)."""

    tiny: bool = Field(False, description="the test size (VLMSize.tiny()); the widths below are then ignored (geometry and "
                       "interleaved_mrope still apply)")
    hidden_size: int = Field(256, ge=8, description="language model width")
    num_layers: int = Field(4, ge=1, description="language model layers")
    vision_hidden_size: int = Field(128, ge=8, description="vision tower width")
    vision_depth: int = Field(4, ge=1, description="vision tower blocks")
    vocab_size: int = Field(1024, ge=400, description="BPE vocabulary trained in code")
    interleaved_mrope: bool = Field(
        False, description="cycle the language model's rotary frequencies over (time, height, width) so visual tokens of "
        "different cells get distinguishable positions (Qwen2.5-VL's blocks give height and width only the slowest "
        "frequencies: at this size the 16 visual tokens are an unordered set); see refine/shapes/vlm/model.py")
    image_side: int = Field(32, ge=16, description="side every image is resized to (a multiple of 2 x patch_size); 32 keeps "
                            "a scene's pixels")
    patch_size: int = Field(4, ge=2, description="vision patch size: 4 at side 32 gives 16 visual tokens per image; 8 at "
                            "side 48 gives 9, one per grid cell (refine/shapes/vlm/model.py)")

    def size(self) -> VLMSize:
        if self.tiny:  # the test widths, with this config's geometry and rotary layout
            return dataclasses.replace(VLMSize.tiny(), interleaved_mrope=self.interleaved_mrope, image_side=self.image_side,
                                       patch_size=self.patch_size)
        return VLMSize(hidden_size=self.hidden_size, num_layers=self.num_layers, vision_hidden_size=self.vision_hidden_size,
                       vision_depth=self.vision_depth, vocab_size=self.vocab_size,
                       interleaved_mrope=self.interleaved_mrope, image_side=self.image_side, patch_size=self.patch_size)


class VLMTrainConfig(RefineConfig):
    """One SFT stage of the ShapeEdit VLM."""

    output_dir: str = Field("runs/vlm-shapes", description="where init/, dataset/, checkpoints/, final/ and metrics.jsonl go")
    init_from: Optional[str] = Field(None, description="model folder to start from (a previous stage's final/); None: a fresh model")
    seed: int = Field(0, description="weights and data order seed")
    grow_depth: int = Field(
        1, ge=1, description="follow each language-model layer of the starting model by grow_depth - 1 zero-output "
        "copies (refine/shapes/vlm/grow.py): a deeper model that starts out answering exactly as the old one; 1: as is")
    reinit_language: bool = Field(
        False, description="untie the head and re-initialise the language model with PyTorch's defaults "
        "(model.reinit_language_model), keeping the starting model's vision tower and merger (stop 49)")
    model: VLMModelConfig = Field(default_factory=VLMModelConfig)
    data: VLMDataConfig = Field(default_factory=VLMDataConfig)
    tower: TowerPretrainConfig = Field(
        default_factory=TowerPretrainConfig, description="supervised pretraining of the vision tower on per-cell heads "
        "before SFT (steps 0: none); needs the cell-aligned geometry (refine/shapes/vlm/tower.py)")
    max_steps: int = Field(2000, ge=1, description="optimizer steps")
    batch_size: int = Field(16, ge=1, description="examples per step")
    learning_rate: float = Field(1e-3, gt=0, description="peak AdamW learning rate")
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(50, ge=0, description="linear warm-up, then cosine decay to 0 at max_steps")
    save_steps: int = Field(100, ge=1, description="checkpoint every this many steps")
    save_total_limit: int = Field(2, ge=1, description="checkpoints kept")
    logging_steps: int = Field(10, ge=1, description="log loss every this many steps")
    num_threads: int = Field(1, ge=1, description="torch threads (1: the machine is shared)")
    progress: bool = Field(True, description="show progress bars")
    resume_from: Optional[str] = Field(None, description="'latest' or a checkpoint folder to resume from")
    freeze_vision: bool = Field(
        False, description="freeze the vision tower (patch embedding and blocks): a judge stage from a seeing model then "
        "cannot collapse the tower's output to an image-independent constant; only the merger (unless freeze_merger) "
        "and the language model learn")
    freeze_merger: bool = Field(
        False, description="freeze the 2x2 patch merger too (the projection of the tower's output into the language model)")
    vision_lr_scale: float = Field(
        1.0, ge=0, description="learning-rate multiplier of the trainable vision parameters (tower and merger, those not "
        "frozen): e.g. 0.1 lets them adapt slowly while the language model learns at learning_rate; 0 freezes them")
    probe_every: int = Field(
        50, ge=0, description="every this many steps log `image_dependence` (how much the vision output varies across "
        "held-out stream scenes; near 0: collapsed, the model no longer sees) to metrics.jsonl; 0: never")
