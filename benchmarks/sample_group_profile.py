"""Where `sample_group`'s time goes: transformer forward vs encoding, packing, sampler arithmetic, copies.

Usage:
    python benchmarks/sample_group_profile.py                      # both settings below, 3 timed repeats
    python benchmarks/sample_group_profile.py --setting shapes --repeats 5

Settings:
* `shapes`: the bundled ShapeEdit editor at the Edit-R1 preset's rollout (examples/configs/edit_r1/
  shapes.yaml: 8 requests x 8 samples, DPM-Solver 6 steps, the editor's CFG, max_batch 64);
* `shapes-edit`: the same editor as `refine edit` / `FlowEditor` run it: 8 requests x 1 sample,
  its default 16 Euler steps and CFG, max_batch 16;
* `qwen`: the tiny Qwen-Image-Edit of refine.testing.tiny_diffusers at 32x32, 1 request x 8 samples,
  8 Euler steps, true CFG 4.0 with a negative prompt, max_batch 16 (benchmarks/sample_group.py's setting).

How: one thread (`torch.set_num_threads(1)`, so every op runs on the calling thread) and CPU time of
that thread (`time.thread_time`), so other jobs on the machine change the wall time, not these
figures. Each part is timed exclusively by wrapping the backbone's methods (a nested call's time
is charged to the inner part only):

| part | what is wrapped |
|---|---|
| transformer forward | `backbone.transformer.forward` |
| encoding | `backbone.encode_condition` (text encoder, source-image encoding and its packing) |
| velocity glue | `predict_velocity` / `velocity` outside the transformer: CFG batching (cat), guidance combine, slicing |
| condition packing | `concat_conditions` (conditions of a chunk, CFG branches) |
| noise | `prepare_noise`, per-step SDE noise |
| sampler arithmetic | the sampler's `step` |
| decode | `backbone.decode` (unpacking, VAE decode) |
| to PIL | `to_pil` of each sample |
| other | the rest of `sample_group`: schedule, loop, stacking, regrouping |

Output: one Markdown table per setting (CPU-s per rollout, share), the share inside the transformer
forward in bold.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections import defaultdict
from contextlib import ExitStack

import torch
from PIL import Image

PARTS = ["transformer forward", "encoding", "velocity glue", "condition packing", "noise", "sampler arithmetic",
         "decode", "to PIL", "other"]


class ExclusiveTimer:
    """Thread CPU time per part; a part's time excludes the parts called inside it."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self._stack: list[list] = []  # [part, started, time spent in children]

    def wrap(self, part: str, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            self._stack.append([part, time.thread_time(), 0.0])
            try:
                return fn(*args, **kwargs)
            finally:
                name, started, children = self._stack.pop()
                elapsed = time.thread_time() - started
                self.totals[name] += elapsed - children
                if self._stack:
                    self._stack[-1][2] += elapsed

        return timed


def patch(stack: ExitStack, owner, name: str, replacement) -> None:
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    stack.callback(setattr, owner, name, original)


def instrument(stack: ExitStack, timer: ExclusiveTimer, backbone) -> None:
    import refine.backbones.base as base
    import refine.rollout.group as group

    transformer = backbone.transformer
    patch(stack, transformer, "forward", timer.wrap("transformer forward", transformer.forward))
    for name, part in (("encode_condition", "encoding"), ("predict_velocity", "velocity glue"), ("velocity", "velocity glue"),
                       ("prepare_noise", "noise"), ("decode", "decode")):
        patch(stack, backbone, name, timer.wrap(part, getattr(backbone, name)))
    patch(stack, group, "_draw_noise", timer.wrap("noise", group._draw_noise))
    patch(stack, group, "to_pil", timer.wrap("to PIL", group.to_pil))
    packed = timer.wrap("condition packing", base.concat_conditions)
    patch(stack, group, "concat_conditions", packed)
    patch(stack, base, "concat_conditions", packed)  # ShapeEdit imports it at call time (CFG branches)
    if hasattr(backbone, "pipeline"):  # the diffusers backbones' CFG helper imported it at module top
        import refine.backbones.diffusers_common as common

        patch(stack, common, "concat_conditions", packed)
    make_sampler = group.make_sampler

    def timed_sampler(*args, **kwargs):
        sampler = make_sampler(*args, **kwargs)
        sampler.step = timer.wrap("sampler arithmetic", sampler.step)
        return sampler

    patch(stack, group, "make_sampler", timed_sampler)


def setting(name: str):
    """(backbone, requests, sample_group keyword arguments) of a setting (see the module docstring)."""
    from refine.types import EditRequest

    if name in ("shapes", "shapes-edit"):
        from refine.backbones.shapes import load_shapes_backbone
        from refine.shapes.data import load_split

        backbone = load_shapes_backbone()
        cases = load_split("shapes-bench")[::67][:8]
        requests = [EditRequest(c.source_image, c.instruction) for c in cases]
        if name == "shapes":
            return backbone, requests, dict(group_size=8, sampler="dpm", steps=6, max_batch=64)
        return backbone, requests, dict(group_size=1, sampler="euler", steps=backbone.default_steps, max_batch=16)
    if name == "qwen":
        from refine.backbones.qwen_image_edit import QwenImageEditBackbone  # first: applies the torchvision shim
        from refine.testing.tiny_diffusers import tiny_qwen_image_edit_dir

        backbone = QwenImageEditBackbone.from_pretrained(
            tiny_qwen_image_edit_dir("edit"), torch_dtype=torch.float32, pixel_area=32 * 32, vl_pixel_area=32 * 32
        )
        g = torch.Generator().manual_seed(0)
        image = Image.fromarray((torch.rand(32, 32, 3, generator=g) * 255).byte().numpy(), "RGB")
        requests = [EditRequest(image, "make the circle blue and move it to the left")]
        return backbone, requests, dict(group_size=8, sampler="euler", steps=8, guidance=4.0, max_batch=16)
    raise SystemExit(f"unknown setting {name!r}; use shapes, shapes-edit or qwen")


def profile(name: str, repeats: int) -> None:
    from refine.rollout.group import sample_group

    backbone, requests, kwargs = setting(name)
    sample_group(backbone, requests, seed=0, **kwargs)  # warm-up (allocator, lazy inits)
    timer = ExclusiveTimer()
    with ExitStack() as stack:
        instrument(stack, timer, backbone)
        run = timer.wrap("other", sample_group)
        walls = []
        for repeat in range(repeats):
            started = time.perf_counter()
            run(backbone, requests, seed=repeat + 1, **kwargs)
            walls.append(time.perf_counter() - started)
    total = sum(timer.totals.values())
    items = len(requests) * kwargs["group_size"]
    print(f"\n### {name}: {len(requests)} request(s) x {kwargs['group_size']} sample(s), {kwargs['sampler']} "
          f"{kwargs['steps']} steps, max_batch {kwargs['max_batch']}; {repeats} rollouts after a warm-up")
    print(f"CPU time per rollout at 1 thread: {total / repeats:.3f} s ({total / repeats / items * 1000:.1f} ms per sample); "
          f"median wall {sorted(walls)[len(walls) // 2]:.3f} s (machine shared)\n")
    print("| part | CPU-s per rollout | share |\n|---|---|---|")
    for part in PARTS:
        seconds = timer.totals.get(part, 0.0) / repeats
        share = f"{100 * seconds * repeats / total:.1f}%"
        print(f"| {part} | {seconds:.4f} | {'**' + share + '**' if part == 'transformer forward' else share} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", action="append", choices=["shapes", "shapes-edit", "qwen"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in args.setting or ["shapes", "shapes-edit", "qwen"]:
        profile(name, args.repeats)


if __name__ == "__main__":
    main()
