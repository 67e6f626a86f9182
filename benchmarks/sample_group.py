"""sample_group (G samples of one request) against what a user would otherwise write with diffusers.

    python benchmarks/sample_group.py --group 8 --steps 8 --repeats 3

Same tiny Qwen-Image-Edit components (refine.testing.tiny_diffusers, float32, CPU), same steps,
true CFG 4.0 with a negative prompt (the pipeline's default scale), one source image:

* pipeline x G:  `QwenImageEditPipeline(...)` called G times, one seed each;
* pipeline NIPP: one call with `num_images_per_prompt=G`;
* sample_group:  `refine.rollout.sample_group(backbone, [request], group_size=G, max_batch=2G)`:
  the condition encoded once, the G samples and both CFG branches in one transformer pass.

The pipelines hard-code a ~1 MP working size; like the tests, the script patches it to --size so
both sides work on the same pixels. Prints the median wall time of --repeats interleaved runs after one warm-up
and the two ratios (goal: >= 2x against G calls, no slower than num_images_per_prompt).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--size", type=int, default=32, help="image side in pixels (multiple of 32)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--guidance", type=float, default=4.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from refine.backbones.qwen_image_edit import QwenImageEditBackbone  # first: applies the torchvision shim

    import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit as edit_module
    from refine.rollout.group import sample_group
    from refine.testing.tiny_diffusers import tiny_qwen_image_edit_dir
    from refine.types import EditRequest

    area = args.size * args.size
    original = edit_module.calculate_dimensions
    edit_module.calculate_dimensions = lambda _, ratio: original(area, ratio)  # the pipeline's 1 MP -> --size
    backbone = QwenImageEditBackbone.from_pretrained(
        tiny_qwen_image_edit_dir("edit"), torch_dtype=torch.float32, pixel_area=area, vl_pixel_area=area
    )
    pipe = backbone.pipeline
    g = torch.Generator().manual_seed(0)
    image = Image.fromarray((torch.rand(args.size, args.size, 3, generator=g) * 255).byte().numpy(), "RGB")
    prompt, negative, G = "make the circle blue and move it to the left", " ", args.group
    common = dict(image=image, prompt=prompt, negative_prompt=negative, true_cfg_scale=args.guidance,
                  num_inference_steps=args.steps, height=args.size, width=args.size, output_type="pil")

    def pipeline_loop():
        return [pipe(generator=torch.Generator().manual_seed(i), **common).images[0] for i in range(G)]

    def pipeline_nipp():
        return pipe(generator=[torch.Generator().manual_seed(i) for i in range(G)], num_images_per_prompt=G, **common).images

    def ours():
        request = EditRequest(image, prompt)
        return sample_group(backbone, [request], group_size=G, sampler="euler", steps=args.steps,
                            guidance=args.guidance, seed=0, max_batch=2 * G).images[0]

    methods = [("pipeline x G", pipeline_loop), ("pipeline NIPP", pipeline_nipp), ("sample_group", ours)]
    runs: dict[str, list[float]] = {name: [] for name, _ in methods}
    with torch.no_grad():
        for _, fn in methods:
            assert len(fn()) == G  # warm-up
        # Interleaved repeats: a busy machine slows all three alike instead of one of them.
        for _ in range(args.repeats):
            for name, fn in methods:
                start = time.perf_counter()
                fn()
                runs[name].append(time.perf_counter() - start)
    timings = {name: statistics.median(values) for name, values in runs.items()}
    print(f"G={G} steps={args.steps} size={args.size} true_cfg={args.guidance} threads={args.threads} repeats={args.repeats}")
    for name, seconds in timings.items():
        print(f"  {name:14s} {seconds:7.3f} s")
    print(f"  speed-up vs pipeline x G:  {timings['pipeline x G'] / timings['sample_group']:.2f}x")
    print(f"  speed-up vs pipeline NIPP: {timings['pipeline NIPP'] / timings['sample_group']:.2f}x")


if __name__ == "__main__":
    main()
