"""Cost of the inline critic: inference against the plain backbone, stage-3 training against the learnable token.

Run:  python benchmarks/inline_critic_cost.py [--repeats 15] [--threads 1] [--skip-training] [--out FILE.json]

1. Inference (goal: <= 3% slower, "one extra token"): the same `FlowEditor.edit` call (same 8
   shapes-bench requests with seeds 0-7, same steps, same batch) on the plain backbone and on
   `InlineCritic(weights)(editor)`, on
   (a) the tiny Qwen-Image-Edit-2509 components (refine.testing.tiny_diffusers, "plus" variant),
       8 steps, with a random critic token (no critic is trained for it; cost does not depend on
       the token's values), and
   (b) ShapeEdit's bundled editor at its own step count with the bundled critic
       (`InlineCritic()`); without the bundled editor, the same architecture with random weights
       and a random token (said in the output).
   The plain arm runs a backbone on which no critic was ever attached (the critic arm gets a deep
   copy of it), so the baseline carries no disabled hooks. Each repeat times both arms back to
   back, in alternating order (plain first on even repeats, critic first on odd ones), after one
   warm-up of each; the figure is the median over repeats of the paired ratio critic / plain with
   a percentile-bootstrap 95% interval, in CPU time of this process at `--threads` threads (on a
   shared machine other jobs inflate wall time much more than CPU time; wall ratios are printed
   too).
2. Training: one optimizer step of stage 3 (critic token + projections + probes, probe taps, the
   joint loss) against one step of the learnable-token baseline (token only, generation loss),
   on the ShapeEdit editor, same batch, paired the same way.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _harness import median_ci  # benchmarks/_harness.py

from refine._compat import ensure_torchvision_importable

ensure_torchvision_importable()


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def paired(base: str, fns: dict, repeats: int) -> dict:
    """Time the two runs in `fns` back to back `repeats` times (alternating which goes first); paired ratios to `base`."""
    (a, fa), (b, fb) = fns.items()
    for fn in fns.values():  # warm-up (caches, allocator)
        fn()
    seconds = {name: {"wall": [], "cpu": []} for name in fns}
    for repeat in range(repeats):
        for name, fn in ((a, fa), (b, fb)) if repeat % 2 == 0 else ((b, fb), (a, fa)):
            wall, cpu = _timed(fn)
            seconds[name]["wall"].append(wall)
            seconds[name]["cpu"].append(cpu)
    other = b if base == a else a
    report = {"repeats": repeats, "median_seconds": {}, "ratio": {}}
    for clock in ("cpu", "wall"):
        ratios = [x / y for x, y in zip(seconds[other][clock], seconds[base][clock])]
        ci = median_ci(ratios)
        report["ratio"][clock] = {"median": round(ci.mean, 4), "ci95": [round(ci.low, 4), round(ci.high, 4)],
                                  "all": [round(r, 4) for r in ratios]}
        report["median_seconds"][clock] = {name: round(statistics.median(s[clock]), 4) for name, s in seconds.items()}
    report["ratio_is"] = f"{other} / {base}"
    return report


def inference_cost(name: str, backbone, requests, *, steps: int, batch: int, repeats: int, weights: str | None) -> dict:
    """`weights` None: the bundled ShapeEdit critic; else a critic file."""
    from refine.inline_critic.refiner import InlineCritic
    from refine.rollout.flow_editor import FlowEditor

    plain = FlowEditor(backbone, steps=steps, batch_size=batch)
    # a deep copy for the critic: its hooks never touch the plain arm's transformer
    critic = InlineCritic(weights)(FlowEditor(copy.deepcopy(backbone), steps=steps, batch_size=batch))
    report = paired("plain", {"plain": lambda: plain.edit(requests), "critic": lambda: critic.edit(requests)}, repeats)
    critic.backbone.detach()
    return {"backbone": name, "critic": "bundled" if weights is None else "random token", "steps": steps,
            "batch": batch, "requests": len(requests), **report}


def random_critic(backbone, folder: Path) -> str:
    from refine.inline_critic.adapters import adapter_for
    from refine.inline_critic.weights import save_critic_weights

    dims = adapter_for(backbone.transformer).dims(backbone.transformer)
    generator = torch.Generator().manual_seed(0)
    return str(save_critic_weights(folder / "critic.safetensors", torch.randn(dims.text_dim, generator=generator) * 0.02,
                                   {"backbone": backbone.name, "text_dim": dims.text_dim}))


def training_cost(backbone, *, batch: int, repeats: int) -> dict:
    from itertools import islice

    from refine.inline_critic.attach import attach_critic
    from refine.inline_critic.config import InlineCriticConfig
    from refine.inline_critic.data import edit_pair_stream
    from refine.inline_critic.train import STAGES, _freeze, build_modules, compute_losses, encode_pairs

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

    report = paired("learnable_token", {"learnable_token": step_fn(STAGES["token"]), "stage3": step_fn(STAGES["3"])}, repeats)
    return {"backbone": "shapes", "batch": batch, **report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-training", action="store_true", help="inference only")
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
    report = {"threads": args.threads, "clock": "process CPU time (time.process_time); wall beside it",
              "shapes_weights": "bundled editor + bundled critic" if bundled else "random (same architecture) + random token",
              "inference": []}
    with tempfile.TemporaryDirectory() as tmp:
        runs = (("tiny Qwen-Image-Edit-2509", qwen, 8, random_critic(qwen, Path(tmp))),
                ("ShapeEdit editor", shapes, shapes.default_steps, None if bundled else random_critic(shapes, Path(tmp))))
        for name, backbone, steps, weights in runs:
            report["inference"].append(inference_cost(name, backbone, requests, steps=steps, batch=8,
                                                      repeats=args.repeats, weights=weights))
            print(json.dumps(report["inference"][-1]), flush=True)
    if not args.skip_training:
        report["training"] = training_cost(shapes, batch=16, repeats=args.repeats)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
