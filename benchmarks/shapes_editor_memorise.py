"""How fast can ShapeEdit's editor memorise a handful of fixed cases? (optimisation, not generalisation)

Usage (one thread; ~10 min per 600 steps on a shared 2-core machine):
    OMP_NUM_THREADS=1 python benchmarks/shapes_editor_memorise.py --category recolor --cases 64 --steps 1000
    OMP_NUM_THREADS=1 python benchmarks/shapes_editor_memorise.py --lr 2e-3
    OMP_NUM_THREADS=1 python benchmarks/shapes_editor_memorise.py --zero-init     # DiT's adaLN-Zero

Trains the bundled editor's architecture from scratch (4 blocks of width 128, seed 0) on `--cases`
fixed direct-phrasing cases of one category (the seed-7 training stream), batch 32 drawn with
replacement, uniform t, AdamW with a 100-step linear warm-up, gradient clipping at 1, no CFG dropout
and no EMA; every `--eval-every` steps it samples the first 32 training cases (Euler 16 steps,
guidance 1, seed 0) and prints the judge's mean scores on them. If even this is slow, the full task
is limited by how fast the architecture and optimiser fit, not only by how much data it sees.
"""

from __future__ import annotations

import argparse
import time
from itertools import islice


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--category", default="recolor")
    parser.add_argument("--cases", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=7e-4)
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--zero-init", action="store_true", help="zero the blocks' modulation and the output layers (adaLN-Zero)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import numpy as np
    import torch

    from refine.backbones.shapes import build_shapes_backbone
    from refine.shapes.editor_training.objective import flow_matching_loss
    from refine.shapes.evaluate import evaluate_editor
    from refine.shapes.data import training_stream

    torch.set_num_threads(args.threads)
    cases = list(islice(training_stream(7, indirect_fraction=0.0, categories=[args.category]), args.cases))
    backbone = build_shapes_backbone(seed=0)
    if args.zero_init:
        # DiT's adaLN-Zero: every block starts as the identity and the output at 0.
        transformer = backbone.transformer
        with torch.no_grad():
            layers = [m for block in transformer.transformer_blocks for m in (block.img_mod[1], block.txt_mod[1])]
            for layer in [*layers, transformer.norm_out.linear, transformer.proj_out]:
                layer.weight.zero_()
                layer.bias.zero_()
    to_pixels = lambda images: torch.from_numpy(np.stack([np.asarray(i) for i in images])).permute(0, 3, 1, 2).float() / 255
    source, target = to_pixels([c.source_image for c in cases]), to_pixels([c.target_image for c in cases])
    ids, mask = backbone.tokenize([c.instruction for c in cases])
    optimizer = torch.optim.AdamW(backbone.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    generator = torch.Generator().manual_seed(0)
    started = time.time()
    print(f"{args.cases} {args.category} cases, lr {args.lr}{', adaLN-Zero' if args.zero_init else ''}")
    for step in range(1, args.steps + 1):
        pick = torch.randint(0, args.cases, (32,), generator=generator)
        t = torch.rand(32, generator=generator)
        noise = torch.randn(32, *backbone.latent_shape, generator=generator)
        for group in optimizer.param_groups:
            group["lr"] = args.lr * min(1.0, step / 100)
        loss = flow_matching_loss(backbone, source[pick], target[pick], ids[pick], mask[pick], t, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(backbone.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if step % args.eval_every == 0:
            backbone.eval()
            scores = evaluate_editor(backbone, cases[:32], steps=16, guidance=1.0, sampler="euler", seed=0, batch_size=32)
            backbone.train()
            shown = {k: round(scores[k], 3) for k in ("overall", "if", "cc", "success")}
            print(f"step {step}: loss {loss.item():.4f} {shown} ({time.time() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
