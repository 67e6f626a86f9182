"""A local vision-language judge: any `AutoModelForImageTextToText` + `AutoProcessor` checkpoint.

Example:
    >>> from PIL import Image
    >>> from refine.rewards.backends.transformers_vlm import TransformersVLM
    >>> from refine.testing.tiny_vlm import tiny_vlm_dir
    >>> vlm = TransformersVLM(tiny_vlm_dir("qwen2_5_vl"))           # Qwen2-VL / 2.5-VL / 3-VL ...
    >>> chat = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (32, 32))},
    ...                                      {"type": "text", "text": "Score 0-5."}]}]
    >>> result = vlm.next_token_probs([chat], candidates=["0", "1", "2", "3", "4", "5"], prefill='"Score": [[')[0]
    >>> round(sum(result.probs.values()), 6), 0 < result.mass < 1
    (1.0, True)

Batching: conversations are rendered with the processor's chat template and padded on the left,
so the last position of every row is its own last token. Logit modes run one forward pass and
keep only the last position's logits (`logits_to_keep=1`); nothing is generated. An assistant
prefill is rendered with `continue_final_message=True`, so the template (and a thinking model's
empty think block) is respected. `max_pixels` / `min_pixels` bound the image resolution of Qwen-VL
style processors (fewer vision tokens, faster judging).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from refine.errors import ConfigError
from refine.paths import resolve_model_source
from refine.rewards.backends.base import Conversation, ProbResult, ScoredText, expand_prefill, renormalize

_DTYPES = ("auto", "float32", "bfloat16", "float16")


class TransformersVLM:
    """Local VLM backend (see the module docstring).

    Args:
        model: a checkpoint folder or hub id (loaded with `AutoModelForImageTextToText`), or a loaded model. A
            relative `refine/assets/<name>` is also found beside the installed package (`refine.paths.resolve_model_source`).
        processor: the matching processor (default: `AutoProcessor.from_pretrained(model)`).
        device: torch device string (ignored with `device_map`).
        device_map: passed to `from_pretrained` (accelerate places the layers), e.g. "auto" to split a
            32B-72B judge across every visible GPU, or a {module: device} dict; inputs go to the
            device of the first layer. None: the whole model on `device`.
        dtype: "auto" (float32 on CPU, bfloat16 on GPU or with a GPU `device_map`), "float32", "bfloat16" or "float16".
        max_pixels / min_pixels: image resolution bounds for Qwen-VL style processors (None: keep).
        batch_size: conversations per forward / generate call.
        attn_implementation: e.g. "sdpa", "flash_attention_2" (None: the model's default).
        generation_kwargs: extra `generate()` keyword arguments (e.g. top_p, min_new_tokens).
    """

    def __init__(
        self,
        model: str | Path | Any,
        processor: Any | None = None,
        device: str = "cpu",
        dtype: str = "auto",
        device_map: str | dict[str, Any] | None = None,
        max_pixels: int | None = None,
        min_pixels: int | None = None,
        batch_size: int = 16,
        attn_implementation: str | None = None,
        generation_kwargs: dict[str, Any] | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if dtype not in _DTYPES:
            raise ConfigError(f"TransformersVLM dtype={dtype!r}; choose one of {', '.join(_DTYPES)}")
        if batch_size < 1:
            raise ConfigError(f"TransformersVLM batch_size={batch_size}; it must be >= 1")
        on_cpu = str(device).startswith("cpu") if device_map is None else device_map in ("cpu", {"": "cpu"})
        torch_dtype = (torch.float32 if on_cpu else torch.bfloat16) if dtype == "auto" else getattr(torch, dtype)
        if isinstance(model, (str, Path)):
            # "no such folder", not a hub repo-id error; `refine/assets/...` also beside the installed package
            source = resolve_model_source(model, "vision-language model")
            kwargs: dict[str, Any] = {"dtype": torch_dtype}
            if device_map is not None:
                kwargs["device_map"] = device_map
            if attn_implementation:
                kwargs["attn_implementation"] = attn_implementation
            try:
                model = AutoModelForImageTextToText.from_pretrained(source, **kwargs)
                processor = processor or AutoProcessor.from_pretrained(source)
            except (OSError, ValueError) as err:
                raise ConfigError(f"cannot load a vision-language model from {source!r}: {str(err).splitlines()[0]}") from None
        elif processor is None:
            raise ConfigError("TransformersVLM got a model object but no processor; pass processor=AutoProcessor...")
        elif device_map is not None:
            raise ConfigError("TransformersVLM device_map needs a checkpoint path; a loaded model is already placed")
        # with a device_map accelerate has placed (and may have split) the model: never move it
        self.model = (model if device_map is not None else model.to(device)).eval()
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.tokenizer.padding_side = "left"  # last position = last real token for every row
        self.device = model.device if device_map is not None else torch.device(device)  # where inputs go
        self.batch_size = batch_size
        self.generation_kwargs = dict(generation_kwargs or {})
        self.name = f"transformers:{getattr(model, 'name_or_path', type(model).__name__)}"
        self._set_pixel_bounds(min_pixels, max_pixels)

    def _set_pixel_bounds(self, min_pixels: int | None, max_pixels: int | None) -> None:
        if min_pixels is None and max_pixels is None:
            return
        image_processor = getattr(self.processor, "image_processor", None)
        size = getattr(image_processor, "size", None)
        if size is None or "longest_edge" not in size:
            raise ConfigError(
                f"max_pixels/min_pixels need a Qwen-VL style image processor; {type(image_processor).__name__} has no pixel bounds"
            )
        size = dict(size)
        if min_pixels is not None:
            size["shortest_edge"] = int(min_pixels)
        if max_pixels is not None:
            size["longest_edge"] = int(max_pixels)
        image_processor.size = size

    # -- encoding ---------------------------------------------------------------------------

    def _encode(self, conversations: Sequence[Conversation], prefills: Sequence[str] | None):
        if prefills is not None and any(prefills):
            if not all(prefills):
                raise ConfigError("a batch mixes empty and non-empty prefills; score them in separate calls")
            chats = [
                list(c) + [{"role": "assistant", "content": [{"type": "text", "text": p}]}]
                for c, p in zip(conversations, prefills)
            ]
            mode = {"continue_final_message": True}
        else:
            chats, mode = [list(c) for c in conversations], {"add_generation_prompt": True}
        inputs = self.processor.apply_chat_template(
            chats, tokenize=True, return_dict=True, return_tensors="pt", processor_kwargs={"padding": True}, **mode
        )
        return inputs.to(self.device)

    def candidate_ids(self, candidates: Sequence[str]) -> list[int]:
        """Token id of each candidate; `ConfigError` when a candidate is not exactly one token."""
        ids = []
        for candidate in candidates:
            tokens = self.tokenizer.encode(candidate, add_special_tokens=False)
            if len(tokens) != 1:
                raise ConfigError(
                    f"candidate {candidate!r} is {len(tokens)} tokens for this tokenizer; logit scoring needs single-token candidates"
                )
            ids.append(tokens[0])
        return ids

    # -- the two backend calls ---------------------------------------------------------------

    def next_token_probs(
        self, conversations: Sequence[Conversation], candidates: Sequence[str], prefill: str | Sequence[str] = ""
    ) -> list[ProbResult]:
        import torch

        ids = self.candidate_ids(candidates)
        prefills = expand_prefill(prefill, len(conversations))
        results: list[ProbResult] = []
        for start in range(0, len(conversations), self.batch_size):
            stop = start + self.batch_size
            inputs = self._encode(conversations[start:stop], prefills[start:stop])
            with torch.inference_mode():
                logits = self.model(**inputs, logits_to_keep=1).logits[:, -1].float()  # (B, V)
            probs = logits.softmax(dim=-1)[:, ids].tolist()  # (B, K) over the full vocabulary
            results.extend(renormalize(dict(zip(candidates, row))) for row in probs)
        return results

    def generate(
        self, conversations: Sequence[Conversation], max_new_tokens: int = 128, temperature: float = 0.0
    ) -> list[str]:
        import torch

        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        texts: list[str] = []
        for start in range(0, len(conversations), self.batch_size):
            inputs = self._encode(conversations[start : start + self.batch_size], None)
            with torch.inference_mode():
                out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, **sampling, **self.generation_kwargs)
            new_tokens = out[:, inputs["input_ids"].shape[1] :]  # (B, T_new)
            texts.extend(self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
        return texts

    def generate_scored(
        self, conversations: Sequence[Conversation], max_new_tokens: int = 128, temperature: float = 0.0
    ) -> list[ScoredText]:
        """`generate`, with each generated token's text and its probability under the model (`ScoredText`).

        The probabilities are the model's own, before temperature (also when the reply is sampled).
        They are read during generation by `_ChosenTokenProbs`, which keeps one step's distribution,
        rather than with `generate(output_scores=True)`, which keeps a (batch, vocab) tensor per
        token (5 GB for 512 tokens of 16 replies over a 150k vocabulary), or a second forward pass
        over the reply, which breaks when a model emits an image placeholder token.
        """
        import torch
        from transformers import LogitsProcessorList

        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        replies: list[ScoredText] = []
        for start in range(0, len(conversations), self.batch_size):
            inputs = self._encode(conversations[start : start + self.batch_size], None)
            recorder = _ChosenTokenProbs()
            with torch.inference_mode():
                out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, logits_processor=LogitsProcessorList([recorder]),
                                          **sampling, **self.generation_kwargs)
            new_tokens = out[:, inputs["input_ids"].shape[1] :]  # (B, T_new)
            probs = recorder.finish(out)  # (B, T_new)
            real = new_tokens != self.tokenizer.pad_token_id  # replies that ended early are padded
            for ids, keep, row in zip(new_tokens.tolist(), real.tolist(), probs.tolist()):
                replies.append(self._scored_text([i for i, k in zip(ids, keep) if k], [p for p, k in zip(row, keep) if k]))
        return replies

    def _scored_text(self, ids: list[int], probs: list[float]) -> ScoredText:
        """Pieces as the growing prefix decodes them, so they concatenate to the decoded text exactly
        (a token's own decode can differ: byte-level pieces of one character, skipped special tokens)."""
        pieces, previous = [], ""
        for end in range(1, len(ids) + 1):
            text = self.tokenizer.decode(ids[:end], skip_special_tokens=True)
            pieces.append(text[len(previous):])
            previous = text
        return ScoredText(previous, pieces, probs)


class _ChosenTokenProbs:
    """A logits processor that records the probability of each token `generate` picks.

    Called once per step with the tokens so far, it reads the previous step's pick in the
    previous step's distribution; `finish` reads the last pick. Custom processors run before
    temperature and top-k/p (transformers appends those after them), so these are the model's
    probabilities. Hand-written because transformers only offers `output_scores`, which keeps
    every step's full distribution.
    """

    def __init__(self) -> None:
        self.previous = None
        self.probs: list[Any] = []

    def __call__(self, input_ids, scores):
        if self.previous is not None:
            self.probs.append(self.previous.gather(1, input_ids[:, -1:]).squeeze(1))
        self.previous = scores.float().softmax(-1)
        return scores

    def finish(self, sequences):
        """(B, T_new) probabilities of the generated tokens, given `generate`'s output sequences."""
        import torch

        if self.previous is None:
            return sequences[:, :0].float()
        last = self.previous.gather(1, sequences[:, -1:]).squeeze(1)
        return torch.stack([*self.probs, last], dim=1)
