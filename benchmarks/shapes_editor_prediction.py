"""Which output parameterisation lets ShapeEdit's small pixel-space editor learn: a short from-scratch ablation.

Usage (one variant per process; two fit side by side on 2 cores, ~15 min each):
    OMP_NUM_THREADS=1 python benchmarks/shapes_editor_prediction.py velocity --steps 800
    OMP_NUM_THREADS=1 python benchmarks/shapes_editor_prediction.py x0 --steps 800

Variants (all: 4 blocks of width 128, batch 32, AdamW 7e-4 after 100 warm-up steps, uniform t,
EMA 0.995, the same data stream and noise; 72 direct-phrasing cases of the tuning split
shapes-val judged with Euler 16 steps, guidance 2, seed 0; the figures in RESULTS.md were measured
on shapes-bench, before shapes-val existed):
* ``velocity``: the transformer predicts v = noise - x0, velocity loss (Qwen-Image's own choice).
* ``x0``: it predicts x0, loss ||x0_hat - x0||^2 (`ShapesBackbone(prediction="x0")`, what ships).
* ``x0-vloss``: it predicts x0, but the loss is on the velocity derived from it.
* ``x0-tloss``: it predicts x0, x0 loss weighted by 1 / max(t, 0.05): between the two above (the
  velocity loss is the x0 loss weighted by 1 / max(t, 0.05)^2).
* ``concat``: velocity prediction, with the source pixels also concatenated to each noise token's
  channels (InstructPix2Pix-style), to test whether locating the source pixel is the bottleneck.
"""

from __future__ import annotations

import argparse
import copy
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant", choices=["velocity", "x0", "x0-vloss", "x0-tloss", "concat"])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    from refine.backbones.shapes import ShapesBackbone, build_shapes_backbone, pack_pixels, rope_axes
    from refine.shapes.editor_training.config import TimestepConfig
    from refine.shapes.editor_training.data import ShapesBatches
    from refine.shapes.editor_training.objective import flow_matching_loss, training_inputs
    from refine.shapes.evaluate import bench_subset, evaluate_editor

    from diffusers.training_utils import EMAModel

    torch.set_num_threads(args.threads)
    prediction = "x0" if args.variant.startswith("x0") else "velocity"
    backbone = build_shapes_backbone(layers=4, width=128, heads=4, prediction=prediction, seed=0)
    if args.variant == "concat":
        from diffusers import QwenImageTransformer2DModel

        torch.manual_seed(0)
        backbone.transformer = QwenImageTransformer2DModel(
            patch_size=2, in_channels=96, out_channels=12, num_layers=4, attention_head_dim=32,
            num_attention_heads=4, joint_attention_dim=128, axes_dims_rope=rope_axes(32),
        )

        def velocity(self, x_t, t, cond):  # noise tokens carry [x_t, source], source tokens [source, 0]
            n, source = x_t.shape[1], cond.image_latents.to(x_t.dtype)
            hidden = torch.cat([torch.cat([x_t, source], -1), torch.cat([source, torch.zeros_like(source)], -1)], 1)
            out = self.transformer(
                hidden_states=hidden, encoder_hidden_states=cond.text, encoder_hidden_states_mask=cond.text_mask,
                timestep=t.to(x_t.dtype).expand(x_t.shape[0]), img_shapes=cond.extras["img_shapes"], return_dict=False,
            )[0]
            return out[:, :n]

        ShapesBackbone.velocity = velocity

    ema_backbone = copy.deepcopy(backbone).eval()
    ema = EMAModel(backbone.parameters(), decay=0.995)  # decay min(0.995, (1 + k) / (10 + k)) at update k
    optimizer = torch.optim.AdamW(backbone.parameters(), lr=7e-4, betas=(0.9, 0.99), weight_decay=0.0)
    batches = ShapesBatches(0, 32, backbone.tokenizer, 0.25, 32)
    uniform = TimestepConfig(sampling="uniform")
    generator = torch.Generator().manual_seed(0)
    empty = backbone.tokenize([""])
    start, losses = time.time(), []
    for step in range(args.steps):
        batch = {key: torch.from_numpy(value) for key, value in batches[step].items()}
        source, target, ids, mask, t, noise = training_inputs(batch, empty, generator, "cpu", cfg_dropout=0.1, timesteps=uniform)
        if args.variant in ("x0-vloss", "x0-tloss"):
            x0, t_ = pack_pixels(target), t.view(-1, 1, 1)
            x_t = (1 - t_) * x0 + t_ * noise
            v = backbone(x_t, t, pack_pixels(source), ids, mask)
            if args.variant == "x0-vloss":
                loss = F.mse_loss(v, noise - x0)
            else:
                loss = ((backbone.output_from_velocity(v, x_t, t) - x0).pow(2) / t_.clamp_min(backbone.x0_min_t)).mean()
        else:  # velocity, x0 and concat: the trainer's loss, in the space the backbone predicts
            loss = flow_matching_loss(backbone, source, target, ids, mask, t, noise)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(backbone.parameters(), 1.0)
        for group in optimizer.param_groups:
            group["lr"] = 7e-4 * min(1.0, (step + 1) / 100)
        optimizer.step()
        ema.step(backbone.parameters())
        losses.append(loss.item())
        if (step + 1) % 100 == 0:
            print(f"step {step + 1} loss {sum(losses[-100:]) / 100:.4f} {time.time() - start:.0f}s", flush=True)
    ema.copy_to(ema_backbone.parameters())
    scores = evaluate_editor(ema_backbone, bench_subset(72, 0))
    keep = ("overall", "if", "cc", "pq", "success")
    print(json.dumps({"variant": args.variant, "steps": args.steps, "seconds": round(time.time() - start),
                      **{k: round(scores[k], 3) for k in keep}}))


if __name__ == "__main__":
    main()
