"""How sharply a ShapeEdit editor copies its source: attention from each noise token to the source token at its position.

Usage:
    python benchmarks/shapes_editor_copy_attention.py                                  # the bundled editor
    python benchmarks/shapes_editor_copy_attention.py --editor runs/base-shapes-v2/checkpoints/checkpoint-002000/editor

An editor keeps what an instruction does not touch by copying it from the source image, which sits
in the same token stream (Qwen-Image-Edit's layout: 64 noise tokens, then 64 source tokens, the
same 2-D RoPE positions, another frame index). Copying needs attention that puts its mass on the one
source token with the query's position. This prints, per block and head, at t = 0.9 / 0.5 / 0.1 on
one batch of training cases: the mean attention weight on that token ("copy"; uniform attention
would give 1/160), the total weight on source tokens and on text tokens, and the gains of the
block's query/key RMSNorms, which bound the attention logits (head_size**0.5 * gain_q * gain_k).
Attention probabilities are recomputed from the queries and keys diffusers' processor passes to
`dispatch_attention_fn` (recorded, then handed on unchanged).
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--editor", default=None, help="editor folder (default: the bundled one)")
    parser.add_argument("--cases", type=int, default=32, help="training cases in the batch")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from refine.backbones.shapes import load_shapes_backbone, pack_pixels  # first: makes diffusers importable
    from refine.shapes.editor_training.data import ShapesBatches

    from _harness import QwenAttentionRecorder

    torch.set_num_threads(args.threads)
    backbone = load_shapes_backbone(args.editor)
    batch = ShapesBatches(seed=7, batch_size=args.cases, tokenizer=backbone.tokenizer)[0]
    source = pack_pixels(torch.from_numpy(batch["source"]).float() / 255)
    target = pack_pixels(torch.from_numpy(batch["target"]).float() / 255)
    ids, mask = torch.from_numpy(batch["ids"]), torch.from_numpy(batch["mask"])
    n, text = target.shape[1], ids.shape[1]

    print(f"editor: {args.editor or 'bundled'}  ({args.cases} training cases; uniform attention = 1/{text + 2 * n})\n")
    print("| t | block | gain q x k | copy (per head) | on source | on text |")
    print("|---|---|---|---|---|---|")
    with QwenAttentionRecorder() as recorder, torch.no_grad():
        probabilities = recorder.probabilities
        cond = backbone.condition_from_tokens(source, ids, mask)
        for t in (0.9, 0.5, 0.1):
            probabilities.clear()
            noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(0))
            backbone.velocity((1 - t) * target + t * noise, torch.tensor([t]), cond)
            for index, (p, block) in enumerate(zip(probabilities, backbone.transformer.transformer_blocks)):
                rows = p[:, :, text : text + n]  # queries of the noise tokens
                copy = torch.diagonal(rows[..., text + n :], dim1=-2, dim2=-1).mean((0, 2))
                on_source = rows[..., text + n :].sum(-1).mean((0, 2)).mean()
                on_text = rows[..., :text].sum(-1).mean((0, 2)).mean()
                gain = float(block.attn.norm_q.weight.abs().mean() * block.attn.norm_k.weight.abs().mean())
                heads = " / ".join(f"{c:.2f}" for c in copy.tolist())
                print(f"| {t} | {index} | {gain:.2f} | {heads} | {on_source:.2f} | {on_text:.2f} |")


if __name__ == "__main__":
    main()
