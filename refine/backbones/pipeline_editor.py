"""PipelineEditor: any diffusers image-editing pipeline as a black-box `Editor`.

Example:
    >>> import torch
    >>> from diffusers import QwenImageEditPipeline                                                   # doctest: +SKIP
    >>> from refine.backbones.pipeline_editor import PipelineEditor
    >>> pipe = QwenImageEditPipeline.from_pretrained("Qwen/Qwen-Image-Edit", dtype=torch.bfloat16)   # doctest: +SKIP
    >>> editor = PipelineEditor(pipe.to("cuda"), num_inference_steps=50, true_cfg_scale=4.0,          # doctest: +SKIP
    ...                         negative_prompt=" ")
    >>> editor.edit([EditRequest(image, "make the sky pink", seed=0)])[0].image                       # doctest: +SKIP

Black-box refiners (the thinker loop) accept it; white-box ones need a `FlowEditor`. Each
request's seed seeds its own CPU generator (None: the pipeline draws its own noise), extra call
arguments are checked against the pipeline's `__call__` signature when the editor is built, and a
failing pipeline call is reported as a `BackendError` naming the pipeline.
"""

from __future__ import annotations

import difflib
import inspect
import time
from typing import Any, Sequence

from refine.errors import BackendError, ConfigError
from refine.images import load_image
from refine.types import EditRequest, EditResult, Step

# Arguments the editor fills in itself from the requests.
_MANAGED = ("image", "prompt", "generator", "output_type", "return_dict", "num_images_per_prompt")


class PipelineEditor:
    """Edits requests by calling `pipeline(image=..., prompt=..., generator=..., **call_kwargs)`.

    Args:
        pipeline: a diffusers pipeline taking ``image`` and ``prompt`` (QwenImageEdit[Plus],
            FluxKontext, InstructPix2Pix...) or any callable with that signature returning `.images`.
        batch_size: requests per call (lists of images and prompts); 1 for pipelines that refuse
            batches (QwenImageEditPlusPipeline).
        name: the `source` of the recorded steps (default: the pipeline's class name).
        call_kwargs: fixed arguments of every call (steps, guidance, sizes...).
    """

    def __init__(self, pipeline: Any, *, batch_size: int = 1, name: str | None = None, **call_kwargs: Any) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} must be >= 1")
        if not callable(pipeline):
            raise ConfigError(f"{type(pipeline).__name__} is not a pipeline (it is not callable)")
        _check_call_kwargs(pipeline, call_kwargs)
        self.pipeline = pipeline
        self.batch_size = batch_size
        self.name = name or type(pipeline).__name__
        self.call_kwargs = call_kwargs

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        import torch

        results: list[EditResult] = []
        for start in range(0, len(requests), self.batch_size):
            chunk = list(requests[start : start + self.batch_size])
            seeded = [r.seed is not None for r in chunk]
            generator = None
            if all(seeded):
                generator = [torch.Generator().manual_seed(int(r.seed)) for r in chunk]
                generator = generator[0] if len(chunk) == 1 else generator
            started = time.perf_counter()
            images = self._call(chunk, generator)
            seconds = (time.perf_counter() - started) / len(chunk)
            info = {k: v for k, v in self.call_kwargs.items() if isinstance(v, (int, float, str, bool, type(None)))}
            for request, image in zip(chunk, images):
                image = load_image(image)
                step = Step(
                    kind="edit",
                    source=self.name,
                    instruction=request.instruction,
                    image=image,
                    seconds=seconds,
                    info={**info, "seed": request.seed if generator is not None else None},
                )
                results.append(EditResult(image=image, instruction=request.instruction, steps=[step], meta=dict(request.meta)))
        return results

    def _call(self, chunk: list[EditRequest], generator) -> list:
        single = len(chunk) == 1
        kwargs = dict(
            image=chunk[0].image if single else [r.image for r in chunk],
            prompt=chunk[0].instruction if single else [r.instruction for r in chunk],
            output_type="pil",
            **self.call_kwargs,
        )
        if generator is not None:
            kwargs["generator"] = generator
        try:
            output = self.pipeline(**kwargs)
        except (ValueError, RuntimeError, TypeError) as err:
            raise BackendError(f"pipeline {self.name} failed on {len(chunk)} request(s): {str(err).splitlines()[0]}") from err
        images = list(getattr(output, "images", output))
        if len(images) != len(chunk):
            raise BackendError(f"pipeline {self.name} returned {len(images)} images for {len(chunk)} requests")
        return images


def _check_call_kwargs(pipeline: Any, call_kwargs: dict[str, Any]) -> None:
    managed = sorted(set(call_kwargs) & set(_MANAGED))
    if managed:
        raise ConfigError(f"PipelineEditor sets {managed} itself from the requests; remove them from the call arguments")
    try:
        parameters = inspect.signature(pipeline.__call__).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return
    for key in call_kwargs:
        if key not in parameters:
            close = difflib.get_close_matches(key, list(parameters), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{type(pipeline).__name__} takes no argument {key!r}{hint}")
