"""Does a ShapeEdit editor use the instruction's new colour? Three probes of recolouring, judge-free.

Usage:
    python benchmarks/shapes_editor_grounding.py                                   # the bundled editor
    python benchmarks/shapes_editor_grounding.py --editor runs/base-shapes-long2/checkpoints/checkpoint-008200/editor

The simplest grounded edit is "make the circle blue" on a scene holding one circle. For every
single-object scene of a fixed set (object colour x shape x cell, white or black background) and
every other colour named in the instruction, this prints:

1. **follows**: the editor's x0 estimate at t = 1 (one step from pure noise, no guidance) on the
   object's pixels, and whether it lands nearer the named colour than the object's own colour
   (a copier scores 0, an editor that grounds the colour word 1). The same for "change the
   background to X" on the background pixels, as the control the editor does learn.
2. **text knows**: held-out accuracy of a linear probe that reads the named colour from the text
   encoder's mean-pooled output on recolour instructions of the training stream: whether the
   information is there before the MM-DiT.
3. **attention**: the mean attention weight that the object's noise tokens put on the colour word
   (and on all text), per block, recomputed from the queries and keys diffusers' processor passes to
   `dispatch_attention_fn` (uniform attention would give 1/(text + 128)).
"""

from __future__ import annotations

import argparse
import itertools


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--editor", default=None, help="editor folder (default: the bundled one)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from refine.backbones.shapes import images_to_pixels, load_shapes_backbone, pack_pixels, unpack_pixels  # first

    from _harness import QwenAttentionRecorder
    from refine.shapes.data import training_stream
    from refine.shapes.world import COLOR_NAMES, COLORS, SHAPES, Obj, Scene, render

    torch.set_num_threads(args.threads)
    backbone = load_shapes_backbone(args.editor)

    # -- 1. follows ---------------------------------------------------------------------------
    rows = []  # (kind, source image, instruction, region mask (H, W), named rgb, own rgb)
    for background, colour, shape, cell in itertools.product(("white", "black"), COLOR_NAMES, SHAPES, [(0, 0), (1, 1), (2, 1)]):
        if colour == background:
            continue
        scene = Scene(background, (Obj(shape, colour, "large", cell),))
        image = render(scene)
        pixels = images_to_pixels([image])[0]
        own = torch.tensor(COLORS[colour], dtype=torch.float32) / 255
        on_object = (pixels - own.view(3, 1, 1)).abs().sum(0) < 1e-3
        for named in COLOR_NAMES:
            if named in (colour, background):
                continue
            rows.append(("object", image, f"make the {shape} {named}", on_object, COLORS[named], COLORS[colour]))
        if colour == COLOR_NAMES[0] and shape == SHAPES[0]:
            for named in COLOR_NAMES:
                if named not in (colour, background):
                    rows.append(("background", image, f"change the background to {named}", ~on_object, COLORS[named], COLORS[background]))

    follows = {"object": [], "background": []}
    attention = []  # per row: [(on colour word, on text)] per block
    with QwenAttentionRecorder() as recorder:
        recorded = recorder.probabilities
        for start in range(0, len(rows), 64):
            chunk = rows[start : start + 64]
            source = pack_pixels(images_to_pixels([r[1] for r in chunk]))
            ids, mask = backbone.tokenize([r[2] for r in chunk])
            noise = torch.randn(source.shape, generator=torch.Generator().manual_seed(start))
            recorded.clear()
            with torch.no_grad():
                velocity = backbone(noise, torch.ones(len(chunk)), source, ids, mask)
            x0 = unpack_pixels(noise - velocity, backbone.image_size, backbone.image_size).clamp(0, 1)
            text_len = ids.shape[1]
            for i, (kind, _, instruction, region, named, own) in enumerate(chunk):
                mean = x0[i][:, region].mean(1)
                named_t, own_t = torch.tensor(named) / 255, torch.tensor(own) / 255
                follows[kind].append(float((mean - named_t).norm() < (mean - own_t).norm()))
                if kind != "object":
                    continue
                word = int(mask[i].sum()) - 1  # the named colour is the instruction's last word
                # noise tokens (2x2 patches of the 16x16 unshuffled grid = 4x4 pixels) covering the object
                token_region = torch.nn.functional.max_pool2d(region[None, None].float(), 4)[0, 0].flatten() > 0
                queries = text_len + token_region.nonzero().flatten()
                p_blocks = [p[i].mean(0) for p in recorded]  # (S, S) per block, mean over heads
                attention.append([(float(p[queries, word].mean()), float(p[queries, : int(mask[i].sum())].sum(-1).mean()))
                                  for p in p_blocks])

    # -- 2. text knows ------------------------------------------------------------------------
    cases = list(itertools.islice(training_stream(99, categories=["recolor"], indirect_fraction=0.0), 3000))
    ids, mask = backbone.tokenize([c.instruction for c in cases])
    with torch.no_grad():
        hidden = backbone.text_encoder(ids, mask)
    weights = mask.unsqueeze(-1).float()
    pooled = (hidden * weights).sum(1) / weights.sum(1)
    labels = torch.tensor([COLOR_NAMES.index(c.edit.color) for c in cases])
    probe = torch.nn.Linear(pooled.shape[1], len(COLOR_NAMES))
    optimizer = torch.optim.Adam(probe.parameters(), 1e-2)
    torch.manual_seed(0)
    for _ in range(300):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(probe(pooled[:2000]), labels[:2000]).backward()
        optimizer.step()
    accuracy = float((probe(pooled[2000:]).argmax(1) == labels[2000:]).float().mean())

    print(f"editor: {args.editor or 'bundled'}")
    print(f"follows the named colour at t = 1: object {sum(follows['object']) / len(follows['object']):.2f} "
          f"({len(follows['object'])} recolours of the only object), background {sum(follows['background']) / len(follows['background']):.2f} "
          f"({len(follows['background'])})")
    print(f"text encoder knows the new colour (linear probe, held out): {accuracy:.2f}")
    print("attention of the object's noise tokens, mean over heads: | block | on the colour word | on all text |")
    for block in range(len(attention[0])):
        word = sum(a[block][0] for a in attention) / len(attention)
        text = sum(a[block][1] for a in attention) / len(attention)
        print(f"| {block} | {word:.3f} | {text:.3f} |")


if __name__ == "__main__":
    main()
