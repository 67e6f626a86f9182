"""The models behind EdiVal's metrics: transformers' Grounding DINO for the rules, DINO features for consistency.

Example (a tiny random-weight Grounding DINO and DINOv2 built in code; the VLM is scripted):
    >>> from PIL import Image
    >>> from refine.compare.benchmarks.edival_detector import EdiValScorer
    >>> from refine.compare.benchmarks.edival_metrics import DetectorSpec
    >>> from refine.testing.tiny_detector import tiny_grounding_dino_dir
    >>> from refine.testing.tiny_vlm import tiny_dinov2_dir
    >>> spec = DetectorSpec(model=str(tiny_grounding_dino_dir()), features=str(tiny_dinov2_dir()), image_size=64)
    >>> scorer = EdiValScorer(spec, ask=lambda images, texts: ["yes"] * len(texts))
    >>> image = Image.new("RGB", (64, 64), "white")
    >>> turn = {"task_type": "color_alter", "instruction": "Change the color of bench to red",
    ...         "format_instruction": "Change the color of [bench] to [red]"}
    >>> scorer.instruction_following(image, image, turn).passed          # colour is a VLM check in EdiVal
    True
    >>> cc = scorer.consistency(image, image, unchanged=["bench"], all_objects=["bench"])
    >>> round(cc["cc"], 3)                                              # identical images: fully consistent
    100.0

`GroundingDetector` runs `GroundingDinoForObjectDetection` (loaded with `from_pretrained`, with its
`GroundingDinoProcessor`) on (image, object names, threshold) queries and keeps the boxes whose best
text-token probability passes the threshold (transformers' `post_process_grounded_object_detection`,
box and text thresholds equal, as EdiVal calls its detector). `EdiValScorer` applies the rules of
`edival_metrics` per task type and computes the consistency terms with the rewards layer's
`ConsistencyReward` (see `edival_metrics` for what follows EdiVal and what is our reading).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from refine._compat import ensure_torchvision_importable
from refine.compare.benchmarks.edival_metrics import (
    KEEP_THRESHOLD, OBJECTS_THRESHOLD, POSITION_COUNT_THRESHOLD, REMOVE_THRESHOLD, THRESHOLD, VLM_QUESTIONS, Detections,
    DetectorSpec, Verdict, background_kept, boxes_mask, count_change, crop, detection_prompt, fill, parse_instruction,
    position_change, resized, says_yes, singular, subject_add, subject_remove, subject_replace,
)
from refine.errors import ConfigError
from refine.rewards.consistency import ConsistencyReward

ensure_torchvision_importable()  # transformers' Grounding DINO modules import torchvision (see refine._compat)

from transformers import GroundingDinoForObjectDetection, GroundingDinoProcessor  # noqa: E402
from transformers.models.grounding_dino.modeling_grounding_dino import GroundingDinoObjectDetectionOutput  # noqa: E402

Ask = Callable[[Sequence[Sequence[Image.Image]], Sequence[str]], list[str]]


class GroundingDetector:
    """Open-vocabulary detection with transformers' Grounding DINO: one `Detections` per (image, names, threshold)."""

    def __init__(self, model: str, device: str = "cpu", dtype: str = "float32", batch_size: int = 8) -> None:
        try:
            self.processor = GroundingDinoProcessor.from_pretrained(model)
            self.model = GroundingDinoForObjectDetection.from_pretrained(model, dtype=getattr(torch, dtype)).to(device).eval()
        except (OSError, ValueError) as err:
            raise ConfigError(f"cannot load a Grounding DINO checkpoint from {model!r}: {str(err).splitlines()[0]}") from None
        self.device, self.batch_size = torch.device(device), batch_size

    def __call__(self, queries: Sequence[tuple[Image.Image, Sequence[str], float]]) -> list[Detections]:
        out: list[Detections] = []
        for start in range(0, len(queries), self.batch_size):
            out.extend(self._batch(queries[start : start + self.batch_size]))
        return out

    def _batch(self, queries: Sequence[tuple[Image.Image, Sequence[str], float]]) -> list[Detections]:
        images = [image for image, _, _ in queries]
        texts = [detection_prompt(names) for _, names, _ in queries]
        inputs = self.processor(images=images, text=texts, padding=True, return_tensors="pt").to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        results = []
        for i, (image, _, threshold) in enumerate(queries):
            # one item at a time: EdiVal's thresholds differ per query
            item = GroundingDinoObjectDetectionOutput(logits=outputs.logits[i : i + 1].float(), pred_boxes=outputs.pred_boxes[i : i + 1].float())
            found = self.processor.post_process_grounded_object_detection(
                item, inputs["input_ids"][i : i + 1], threshold=threshold, text_threshold=threshold, target_sizes=[(1, 1)]
            )[0]
            boxes = [tuple(float(v) for v in box) for box in found["boxes"].tolist()]  # target size 1x1: normalised
            labels = found["text_labels"] if "text_labels" in found else found.get("labels", [])
            results.append(Detections(boxes, [float(s) for s in found["scores"].tolist()], [str(label) for label in labels]))
        return results


class EdiValScorer:
    """IF and CC of one EdiVal turn (see `edival_metrics` for the rules and what is our reading).

    Args:
        spec: the detector and feature models and where they run.
        ask: answers one question per (images, text), images first (the judge backend: EdiVal's VLM).
        questions: EdiVal's VLM questions by constant name (`VLM_QUESTIONS` keys); refine's wording by default.
    """

    def __init__(self, spec: DetectorSpec, ask: Ask, questions: dict[str, str] | None = None) -> None:
        self.spec = spec
        self.detector = GroundingDetector(spec.model, spec.device, spec.dtype, spec.batch_size)
        # EdiVal's object similarity: 0.5 x CLS cosine + 0.5 x patch cosine (the pixel term is kept in the details)
        self.features = ConsistencyReward(
            spec.features, spec.device, spec.dtype, weights={"cls": 0.5, "patch": 0.5}, batch_size=spec.batch_size, name="edival-cc"
        )
        self.ask = ask
        self.questions = {**VLM_QUESTIONS, **(questions or {})}

    # -- helpers ---------------------------------------------------------------------------------

    def detect(self, image: Image.Image, names: str | Sequence[str], threshold: float = THRESHOLD, drop_full: bool = False) -> Detections:
        found = self.detector([(image, [names] if isinstance(names, str) else list(names), threshold)])[0]
        if not drop_full:
            return found
        # EdiVal drops boxes covering nearly the whole image for removals (a detector false positive)
        keep = [i for i, b in enumerate(found.boxes) if not (b[2] - b[0] > 0.98 and b[3] - b[1] > 0.98)]
        return Detections([found.boxes[i] for i in keep], [found.scores[i] for i in keep], [found.labels[i] for i in keep] if found.labels else [])

    def _answer(self, images: Sequence[Image.Image], name: str, **fields: str) -> str:
        return self.ask([list(images)], [fill(self.questions[name], **fields)])[0] or ""

    # -- IF --------------------------------------------------------------------------------------

    def instruction_following(self, source: Image.Image, target: Image.Image, turn: dict[str, Any]) -> Verdict:
        """Whether the turn's instruction was carried out from `source` (previous output) to `target`."""
        size = self.spec.image_size
        source, target = resized(source, size), resized(target, size)
        kind = turn["task_type"]
        text = turn["instruction"] if kind == "background_change" else turn["format_instruction"]
        fields = parse_instruction(kind, text)
        if fields is None:
            return Verdict(False, f"not in EdiVal's {kind} format: {text!r}")
        if kind == "subject_add":
            answer = self._answer([source, target], "VLM_DD_ADD_OBJECT_PROMPT", object_name=fields["object"])
            if not says_yes(answer):
                return Verdict(False, f"VLM pre-check: the new object is not seen ({answer[:80]!r})")
            reference = self.detect(source, fields["reference"]) if "reference" in fields else None
            return subject_add(self.detect(target, fields["object"]), reference, fields.get("position"))
        if kind == "subject_remove":
            name = fields["object"]
            return subject_remove(self.detect(source, name, REMOVE_THRESHOLD, True), self.detect(target, name, REMOVE_THRESHOLD, True))
        if kind == "subject_replace":
            answer = self._answer([source, target], "VLM_DD_REPLACE_PROMPT", object_name=fields["object"], new_object=fields["new"])
            if not says_yes(answer):
                return Verdict(False, f"VLM pre-check: no replacement seen ({answer[:80]!r})")
            return subject_replace(self.detect(source, singular(fields["object"])), self.detect(target, singular(fields["new"])))
        if kind == "position_change":
            obj, ref = fields["object"], fields["reference"]
            counts = [self.detect(image, name, POSITION_COUNT_THRESHOLD) for image in (source, target) for name in (ref, obj)]
            return position_change(*counts, self.detect(target, ref).top(), self.detect(target, obj).top(), fields["position"])
        if kind == "count_change":
            return count_change(self.detect(source, fields["object"]), self.detect(target, fields["object"]), fields["count"])
        if kind in ("color_alter", "material_alter"):
            name = "VLM_DD_COLOR_ALTER_PROMPT" if kind == "color_alter" else "VLM_DD_MATERIAL_ALTER_PROMPT"
            answer = self._answer([source, target], name, instruction=text)
            return Verdict(says_yes(answer), f"VLM: {answer[:80]!r}")
        if kind == "text_change":
            region = target
            if "object" in fields:
                before, after = self.detect(source, fields["object"]), self.detect(target, fields["object"])
                if before.top() is None or after.top() is None:
                    return Verdict(False, f"the text's object detected: input {len(before)}, output {len(after)}")
                region = crop(target, before.top()) or target
            answer = self._answer([region], "VLM_TEXT_PROMPT")
            return Verdict(fields["text"].lower() in answer.lower(), f"VLM read {answer[:80]!r}")
        if kind == "background_change":
            keep = [n.strip() for n in fields.get("keep", "").split(",") if n.strip()]
            kept = background_kept([self.detect(target, name, KEEP_THRESHOLD) for name in keep])
            if not kept.passed:
                return kept
            answer = self._answer([target], "VLM_BACKGROUND_PROMPT", background=fields["background"])
            return Verdict(says_yes(answer), f"VLM: {answer[:80]!r}")
        return Verdict(False, f"unknown task type {kind!r}")

    # -- CC --------------------------------------------------------------------------------------

    def consistency(self, base: Image.Image, target: Image.Image, unchanged: Sequence[str], all_objects: Sequence[str]) -> dict[str, float | None]:
        """CC of `target` against the input `base`: object and background DINO / pixel terms and `cc` (0-100)."""
        size = self.spec.image_size
        base, target = resized(base, size), resized(target, size)
        out: dict[str, float | None] = {"object_dino": None, "object_pixel": None, "background_dino": None, "background_pixel": None}
        if unchanged:
            boxes = self.detect(base, unchanged, OBJECTS_THRESHOLD).boxes
            pairs = [(crop(base, b), crop(target, b)) for b in boxes]
            pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
            if pairs:
                scored = self.features([a for a, _ in pairs], [b for _, b in pairs], [""] * len(pairs))
                out["object_dino"] = float(np.mean(scored.scores))
                out["object_pixel"] = float(np.mean([d["pixel"] for d in scored.details]))
            else:  # EdiVal scores an unchanged object it cannot find as 0
                out["object_dino"] = out["object_pixel"] = 0.0
        if all_objects:
            boxes = list(self.detect(base, all_objects, OBJECTS_THRESHOLD).boxes) + list(self.detect(target, all_objects, OBJECTS_THRESHOLD).boxes)
            scored = self.features([base], [target], [""], [{"mask": boxes_mask(base.size, boxes)}])
            if scored.scores[0] is not None:  # None: the objects cover the whole image
                out["background_dino"] = scored.details[0]["patch"]
                out["background_pixel"] = scored.details[0]["pixel"]
        terms = [v for v in (out["object_dino"], out["background_dino"]) if v is not None]
        out["cc"] = 100.0 * float(np.mean(terms)) if terms else None
        return out
