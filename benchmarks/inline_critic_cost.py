"""Cost of the inline critic: inference against the plain backbone, stage-3 training against the learnable token.

Run:  python benchmarks/inline_critic_cost.py [--repeats 7] [--out benchmarks/inline_critic_cost.json]

1. Inference (goal: <= 3% slower, "one extra token"): the same `FlowEditor.edit` call (same
   requests, seeds, steps, batch) on the plain backbone and on `InlineCritic(...)(editor)`, on
   (a) the tiny Qwen-Image-Edit-2509 components (refine.testing.tiny_diffusers, "plus" variant)
   and (b) the ShapeEdit editor (the bundled one when present, else the same architecture with
   random weights: cost does not depend on the weights). The two are interleaved, `repeats`
   times, and the median is reported, as wall time and as this process's CPU time (the CPU
   time is the robust number on a shared machine: other jobs inflate wall time, not CPU time).
2. Training: one optimizer step of stage 3 (critic token + projections + probes, probe taps, the
   joint loss) against one step of the learnable-token baseline (token only, generation loss),
   on the ShapeEdit editor, same batch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from refine._compat import ensure_torchvision_importable

ensure_torchvision_importable()


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _interleaved(fns: dict, repeats: int) -> dict[str, dict[str, float]]:
    for fn in fns.values():  # warm-up (caches, allocator)
        fn()
    samples = {name: {"wall": [], "cpu": []} for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            wall, cpu = _timed(fn)
            samples[name]["wall"].append(wall)
            samples[name]["cpu"].append(cpu)
    return {name: {k: statistics.median(v) for k, v in s.items()} for name, s in samples.items()}


def _ratio(times: dict, a: str, b: str) -> dict[str, float]:
    return {k: round(times[a][k] / times[b][k], 4) for k in ("wall", "cpu")}


def inference_cost(name: str, backbone, requests, *, steps: int, batch: int, repeats: int) -> dict:
    from refine.inline_critic.refiner import InlineCritic
    from refine.inline_critic.weights import save_critic_weights
    from refine.rollout.flow_editor import FlowEditor
    from refine.inline_critic.adapters import adapter_for
    import tempfile

    dims = adapter_for(backbone.transformer).dims(backbone.transformer)
    with tempfile.TemporaryDirectory() as tmp:
        weights = save_critic_weights(Path(tmp) / "c.safetensors", torch.randn(dims.text_dim) * 0.02,
                                      {"backbone": backbone.name, "text_dim": dims.text_dim})
        plain = FlowEditor(backbone, steps=steps, batch_size=batch)
        critic = InlineCritic(str(weights))(plain)
    times = _interleaved({"plain": lambda: plain.edit(requests), "critic": lambda: critic.edit(requests)}, repeats)
    critic.backbone.detach()  # leave the transformer clean for the next measurement
    return {"backbone": name, "steps": steps, "batch": batch, "requests": len(requests), "seconds": times,
            "critic_over_plain": _ratio(times, "critic", "plain")}


def training_cost(backbone, *, batch: int, repeats: int) -> dict:
    from refine.inline_critic.attach import attach_critic
    from refine.inline_critic.config import InlineCriticConfig
    from refine.inline_critic.data import edit_pair_stream
    from refine.inline_critic.train import STAGES, _freeze, build_modules, compute_losses, encode_pairs
    from itertools import islice

    config = InlineCriticConfig(num_probes=3)
    _freeze(backbone)
    modules = build_modules(config, backbone)
    pairs = list(islice(edit_pair_stream(config.data), batch))
    x0, cond = encode_pairs(backbone, pairs)

    def step_fn(spec):
        params = [p for group in spec.trainable for p in modules.group(group)]
        for p in params:
            p.requires_grad_(True)
        optimizer = torch.optim.AdamW(params, lr=1e-4)
        layers = modules.probe_layers if spec.needs_probes else ()

        def step():
            with attach_critic(backbone.transformer, token=modules.critic_token, layers=layers, hide_critic=spec.hide_critic) as att:
                losses = compute_losses(backbone, att, modules, x0, cond, spec, config, torch.Generator().manual_seed(0))
                losses["loss"].backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

        return step

    times = _interleaved({"stage3": step_fn(STAGES["3"]), "learnable_token": step_fn(STAGES["token"])}, repeats)
    return {"backbone": "shapes", "batch": batch, "seconds": times, "stage3_over_token": _ratio(times, "stage3", "learnable_token")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from refine.backbones.qwen_image_edit import QwenImageEditBackbone
    from refine.backbones.shapes import BUNDLED_EDITOR, build_shapes_backbone, load_shapes_backbone
    from refine.shapes.data import load_split
    from refine.testing.tiny_diffusers import tiny_qwen_image_edit_dir

    requests = [case.to_request(seed=i) for i, case in enumerate(load_split("shapes-bench")[:8])]
    bundled = (BUNDLED_EDITOR / "model_index.json").is_file()
    shapes = load_shapes_backbone() if bundled else build_shapes_backbone()
    qwen = QwenImageEditBackbone.from_pretrained(tiny_qwen_image_edit_dir("plus"), torch_dtype=torch.float32, pixel_area=32 * 32)
    report = {"threads": args.threads, "shapes_weights": "bundled" if bundled else "random (same architecture)", "inference": []}
    for name, backbone, steps in (("tiny Qwen-Image-Edit-2509", qwen, 8), ("ShapeEdit editor", shapes, 16)):
        report["inference"].append(inference_cost(name, backbone, requests, steps=steps, batch=8, repeats=args.repeats))
        print(json.dumps(report["inference"][-1]), flush=True)
    report["training"] = training_cost(shapes, batch=16, repeats=args.repeats)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
