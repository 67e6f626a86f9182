"""Judge throughput: Edit-R1's score_logit (one prefill) against sampling a reasoned score (generation).

Run:  python benchmarks/rewards_logit_vs_sample.py [--batch 32] [--new-tokens 64] [--repeats 5] [--threads 2]
      python benchmarks/rewards_logit_vs_sample.py --realistic [--layers 4] [--batch 4] [--new-tokens 16]
          [--lengths 64 128 256] [--repeats 5]

Default (tiny): the tiny Qwen2.5-VL judge (refine.testing.tiny_vlm, random weights: cost does not
depend on the weights), same batch of `batch` (source, edited, instruction) items with 32x32 images:

* score_logit: `MLLMJudge(mode="score_logit")`, one batched forward pass, last position only;
* score_sample_cot: `MLLMJudge(mode="score_sample_cot")`, reasoning then score, generating
  exactly `new_tokens` tokens per item (min_new_tokens forces the length: a random model would
  stop at random points), batched.

Caching is off. The two are interleaved `repeats` times after a warm-up; the median is reported
as wall time and as this process's CPU time (on a shared machine other jobs inflate wall time,
not CPU time). Goal: score_logit >= 5x the items/s of score_sample_cot.

--realistic: the same two judges on a random-weight Qwen2.5-VL whose text tower has the shape of
Qwen2.5-VL-3B's (hidden 2048, 16 heads, 2 kv heads, intermediate 11008, vocabulary 151936, tied
embeddings; 36 layers there, `--layers` here, 4 by default to fit a shared 24 GiB machine) and a
small vision tower, built in code as refine.testing.tiny_vlm builds the tiny one (config ->
save_pretrained to a temporary folder -> `TransformersVLM`), so the real loading, encoding,
forward and `generate` code paths run. Forward hooks on the model and on every decoder layer
split each arm's CPU time into prefill and per-token decode, each into a per-layer part and a
fixed part (embeddings, vision tower, LM head, Python). Since the ratio of the two arms is

    items/s(score_logit) / items/s(score_sample_cot) = (prefill_cot + L x decode + rest_cot) / (prefill_logit + rest_logit)

it is reported for each reasoning length L in `--lengths`, at the measured layer count and with
the per-layer parts scaled linearly to 36 layers (the fixed parts kept). Only `--new-tokens`
tokens are generated (decode steps cost the same at every position at these lengths, to within
the growing attention span: see the per-step spread printed). Figures are CPU time of this
process at `--threads` threads (1 by default), medians over interleaved repeats with a
percentile-bootstrap 95% interval.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _harness import interleaved_medians, median_ci, scenes, speedups  # benchmarks/_harness.py

from refine._compat import ensure_torchvision_importable

# Qwen2.5-VL-3B-Instruct's text tower (its config.json): what a decode step costs on a real judge.
QWEN2_5_VL_3B_TEXT = dict(hidden_size=2048, num_attention_heads=16, num_key_value_heads=2, intermediate_size=11008,
                          vocab_size=151936, num_hidden_layers=36, tie_word_embeddings=True)


def save_realistic_qwen2_5_vl(path: Path, *, layers: int, seed: int = 0) -> Path:
    """A random-weight Qwen2.5-VL with Qwen2.5-VL-3B's text-tower shape (`layers` layers) and a small vision tower."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    # The tiny builder's tokenizer, processors and special ids; the model config is ours (its sizes are fixed there).
    from refine.testing import tiny_vlm
    from refine.testing.tokenizer import build_qwen_tokenizer

    tokenizer = build_qwen_tokenizer()
    ids = tiny_vlm._special_ids(tokenizer)
    processor = Qwen2_5_VLProcessor(image_processor=tiny_vlm._image_processor(), tokenizer=tokenizer,
                                    video_processor=tiny_vlm._video_processor("qwen2_5_vl"),
                                    chat_template=tiny_vlm.QWEN2_5_VL_CHAT_TEMPLATE)
    text = dict(QWEN2_5_VL_3B_TEXT, num_hidden_layers=layers)
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    config = Qwen2_5_VLConfig(
        text_config=dict(
            **text, max_position_embeddings=32768, initializer_range=0.02,
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
            rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": tiny_vlm._mrope(head_dim)},
        ),
        vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=tiny_vlm.PATCH_SIZE,
            spatial_merge_size=tiny_vlm.MERGE_SIZE, temporal_patch_size=tiny_vlm.TEMPORAL_PATCH_SIZE,
            out_hidden_size=text["hidden_size"], window_size=tiny_vlm.PATCH_SIZE * tiny_vlm.MERGE_SIZE * 2,
            fullatt_block_indexes=[1],
        ),
        tie_word_embeddings=True,
        **tiny_vlm._vision_token_ids(ids),
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    path = tiny_vlm._save(model, processor, ids, path)
    del model
    return path


class ForwardClock:
    """CPU time of every top-level forward call of `model`, and of its decoder layers inside it."""

    def __init__(self, model) -> None:
        self.calls: list[dict[str, float]] = []  # one per forward: {"total": s, "layers": s, "tokens": T}
        self.layers = [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]
        self._layer_start = 0.0
        self._start = 0.0
        self._layer_sum = 0.0
        self._tokens = 0
        model.register_forward_pre_hook(self._pre, with_kwargs=True)
        model.register_forward_hook(self._post)
        for layer in self.layers:
            layer.register_forward_pre_hook(lambda *a: setattr(self, "_layer_start", time.process_time()))
            layer.register_forward_hook(self._layer_post)

    def _pre(self, module, args, kwargs):
        ids = kwargs.get("input_ids")
        self._tokens = int(ids.shape[1]) if ids is not None else 0
        self._layer_sum, self._start = 0.0, time.process_time()

    def _layer_post(self, *args):
        self._layer_sum += time.process_time() - self._layer_start

    def _post(self, *args):
        self.calls.append({"total": time.process_time() - self._start, "layers": self._layer_sum, "tokens": self._tokens})


def realistic(args) -> dict:
    from refine.rewards.backends.transformers_vlm import TransformersVLM
    from refine.rewards.mllm import MLLMJudge

    with tempfile.TemporaryDirectory(prefix="refine-judge-3b-shape-") as folder:
        path = save_realistic_qwen2_5_vl(Path(folder), layers=args.layers)
        logit_backend = TransformersVLM(path, batch_size=args.batch, dtype="float32")
    model = logit_backend.model
    params = sum(p.numel() for p in model.parameters())
    sample_backend = TransformersVLM(model, logit_backend.processor, batch_size=args.batch,
                                     generation_kwargs={"min_new_tokens": args.new_tokens})
    judges = {
        "score_logit": MLLMJudge(logit_backend, mode="score_logit", cache=False),
        "score_sample_cot": MLLMJudge(sample_backend, mode="score_sample_cot", max_new_tokens=args.new_tokens, cache=False),
    }
    clock = ForwardClock(model)
    batch = (scenes(args.batch), scenes(args.batch, offset=100), ["make the circle blue"] * args.batch,
             [{"task_type": "recolor"}] * args.batch)
    records: dict[str, list[dict]] = {name: [] for name in judges}
    for repeat in range(args.repeats + 1):  # repeat 0 is the warm-up, not recorded
        order = list(judges) if repeat % 2 == 0 else list(judges)[::-1]  # alternate the order: no arm always runs first
        for name in order:
            clock.calls.clear()
            start = time.process_time()
            judges[name](*batch)
            total = time.process_time() - start
            if repeat:
                records[name].append({"total": total, "calls": list(clock.calls)})

    n, b, full = args.layers, args.batch, QWEN2_5_VL_3B_TEXT["num_hidden_layers"]

    def per_item(values):  # seconds per batch -> seconds per item, median and interval
        ci = median_ci([v / b for v in values])
        return {"median": round(ci.mean, 5), "ci95": [round(ci.low, 5), round(ci.high, 5)]}

    logit, cot = records["score_logit"], records["score_sample_cot"]
    parts = {
        "logit_total": [r["total"] for r in logit],
        "logit_prefill": [r["calls"][0]["total"] for r in logit],
        "logit_prefill_layers": [r["calls"][0]["layers"] for r in logit],
        "cot_total": [r["total"] for r in cot],
        "cot_prefill": [r["calls"][0]["total"] for r in cot],
        "cot_prefill_layers": [r["calls"][0]["layers"] for r in cot],
        # one decode step per generated token after the first (the first comes out of the prefill)
        "cot_decode_step": [statistics.median(c["total"] for c in r["calls"][1:]) for r in cot],
        "cot_decode_step_layers": [statistics.median(c["layers"] for c in r["calls"][1:]) for r in cot],
    }
    figures = {name: per_item(values) for name, values in parts.items()}
    steps = [c["total"] / b for r in cot for c in r["calls"][1:]]
    med = {name: statistics.median(v) / b for name, v in parts.items()}
    # rest: what is outside the model's forward calls (chat template, processor, generate's loop, parsing)
    logit_rest = med["logit_total"] - med["logit_prefill"]
    decode_calls = len(cot[0]["calls"]) - 1
    cot_rest = med["cot_total"] - med["cot_prefill"] - decode_calls * med["cot_decode_step"]

    def scaled(value: float, layers_part: float) -> float:  # per-layer part scaled from n to `full` layers
        return value - layers_part + layers_part * full / n

    ratios = {}
    for length in args.lengths:
        at_n = (med["cot_prefill"] + cot_rest + length * med["cot_decode_step"]) / (med["logit_prefill"] + logit_rest)
        at_full = (scaled(med["cot_prefill"], med["cot_prefill_layers"]) + cot_rest
                   + length * scaled(med["cot_decode_step"], med["cot_decode_step_layers"])) / (
            scaled(med["logit_prefill"], med["logit_prefill_layers"]) + logit_rest)
        ratios[str(length)] = {f"{n}_layers": round(at_n, 2), f"{full}_layers_scaled": round(at_full, 2)}
    measured_ratio = median_ci([c["total"] / l["total"] for l, c in zip(logit, cot)])
    at_measured = (med["cot_prefill"] + cot_rest + decode_calls * med["cot_decode_step"]) / (med["logit_prefill"] + logit_rest)
    return {
        "mode": "realistic", "layers": n, "scaled_to_layers": full, "parameters": params, "batch": b,
        "repeats": args.repeats, "threads": args.threads, "clock": "process CPU time (time.process_time)",
        "prompt_tokens": {"score_logit": logit[0]["calls"][0]["tokens"], "score_sample_cot": cot[0]["calls"][0]["tokens"]},
        "generated_tokens": args.new_tokens, "decode_calls": decode_calls,
        "per_item_seconds": figures,
        "decode_step_spread_per_item": {"min": round(min(steps), 5), "max": round(max(steps), 5)},
        "rest_per_item_seconds": {"score_logit": round(logit_rest, 5), "score_sample_cot": round(cot_rest, 5)},
        "measured_ratio_at_generated_tokens": {"median": round(measured_ratio.mean, 2),
                                               "ci95": [round(measured_ratio.low, 2), round(measured_ratio.high, 2)],
                                               "model_prediction": round(at_measured, 2)},
        "ratio_logit_over_cot_items_per_s": ratios,
    }


def tiny(args) -> dict:
    from refine.rewards.backends.transformers_vlm import TransformersVLM
    from refine.rewards.mllm import MLLMJudge
    from refine.testing.tiny_vlm import tiny_vlm_dir

    logit_backend = TransformersVLM(tiny_vlm_dir("qwen2_5_vl"), batch_size=args.batch)
    sample_backend = TransformersVLM(
        logit_backend.model, logit_backend.processor, batch_size=args.batch,
        generation_kwargs={"min_new_tokens": args.new_tokens},
    )
    judges = {
        "score_logit": MLLMJudge(logit_backend, mode="score_logit", cache=False),
        "score_sample_cot": MLLMJudge(sample_backend, mode="score_sample_cot", max_new_tokens=args.new_tokens, cache=False),
    }
    batch = (scenes(args.batch), scenes(args.batch, offset=100), ["make the circle blue"] * args.batch,
             [{"task_type": "recolor"}] * args.batch)
    runs = {name: (lambda judge=judge: judge(*batch)) for name, judge in judges.items()}
    stats = interleaved_medians(runs, items=args.batch, repeats=args.repeats)

    result = {"batch": args.batch, "new_tokens": args.new_tokens, "repeats": args.repeats, "threads": args.threads}
    result.update(stats)
    result.update(speedups(stats, fast="score_logit", slow="score_sample_cot"))
    result["goal"] = ">= 5x"
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realistic", action="store_true", help="Qwen2.5-VL-3B text-tower shape instead of the tiny judge")
    parser.add_argument("--layers", type=int, default=4, help="--realistic: decoder layers built (3B has 36)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256],
                        help="--realistic: reasoning lengths the ratio is reported for")
    parser.add_argument("--batch", type=int, default=None, help="items per call (default 32; 4 with --realistic)")
    parser.add_argument("--new-tokens", type=int, default=None,
                        help="tokens generated per item (default 64; 16 with --realistic)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default 2; 1 with --realistic)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    defaults = (4, 16, 1) if args.realistic else (32, 64, 2)
    args.batch, args.new_tokens, args.threads = (v if v is not None else d for v, d in
                                                 zip((args.batch, args.new_tokens, args.threads), defaults))

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no tokenizer threads beside the measured one
    torch.set_num_threads(args.threads)
    ensure_torchvision_importable()
    result = realistic(args) if args.realistic else tiny(args)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
