"""Question first or image first: how soon does a small transformer learn to find a named object among the visual tokens?

    python benchmarks/lookup_order.py --order image-first --seeds 0 1 2 --out runs/lookup-order-image-first.json
    python benchmarks/lookup_order.py --order question-first --seeds 0 1 2 --out runs/lookup-order-question-first.json
    python benchmarks/lookup_order.py --order image-first --gap 0 --seeds 0 1 2 --out runs/lookup-order-image-first-gap0.json
    python benchmarks/lookup_order.py --gap 0 --confusable 0.5 --seeds 0 1 2 --out runs/lookup-order-gap0-c05.json   # stop 50

Why (issue 24, stop 49): the ShapeEdit VLM's language model never learnt `where` ("Where is the red circle?" ->
"middle right") from the image: at chance among the occupied cells after 1,000 steps, from transformers'
initialisation and from PyTorch's. The visual tokens are not the cause: a linear probe reads each token's
cell, colour and shape from the bundle's merger output (100%, 100%, 98%), and one attention layer given the
asked colour and shape as its query learns the lookup to 90% in 100 steps. So this script puts the same frozen visual
tokens into a small causal transformer (PyTorch's `nn.TransformerEncoder`, pre-norm, learned positions, 4
layers, 128 wide) as a language model sees them: a fixed 5-token system prompt, the 9 visual tokens (one per
cell, projected), then "where is the COLOUR SHAPE" and `--gap` more fixed tokens ("?" and 2 that open the answer;
`image-first`, the layout every row of `refine train vlm` has), or the question, the image, then the `--gap` tokens
(`question-first`).
The answer position is trained to name the object's cell (9-way, cross-entropy); a step is 16 questions,
AdamW at lr 3e-4. Reported every 100 steps: held-out accuracy by object count, beside the chance of a model
that knows only which cells are occupied (1 / n), and on the questions whose shape another object shares
(`shape_shared`: only the colour finds those; stop 50). `--confusable P` draws a share P of each batch from them.

Hand-written: a diagnostic of the learning dynamics, minutes per run, on features computed once by the
bundle's own vision tower (`refine.shapes.vlm.probes.visual_tokens`).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refine._compat import ensure_torchvision_importable  # noqa: E402

ensure_torchvision_importable()  # transformers' processors import torchvision

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402
from transformers import AutoModelForImageTextToText, AutoProcessor  # noqa: E402

from refine.shapes.data import training_stream  # noqa: E402
from refine.shapes.vlm.probes import visual_tokens  # noqa: E402
from refine.shapes.world import render  # noqa: E402

BUNDLE = "refine/assets/shapes-thinker-scan"
SYSTEM, QUESTION_WORDS, ANSWER_WORDS = 5, 3, 2   # a fixed system prompt; "where is the"; the tokens before the answer


def scene_features(scenes: int, seed: int) -> tuple[torch.Tensor, list]:
    """(the bundle's 9 visual tokens of each of `scenes` training-stream sources with an object, those scenes)."""
    model, processor = AutoModelForImageTextToText.from_pretrained(BUNDLE).eval(), AutoProcessor.from_pretrained(BUNDLE)
    picked = [case.source for case in itertools.islice(training_stream(seed), scenes) if case.source.objects]
    with torch.no_grad():
        features = torch.cat([visual_tokens(model, processor, [render(s, 32) for s in picked[i:i + 64]]) for i in range(0, len(picked), 64)])
    return features, picked


class Finder(nn.Module):
    """Word embeddings, a projection of the visual tokens, learned positions, a causal pre-norm encoder, a 9-way head."""

    def __init__(self, words: int, visual_width: int, width: int, layers: int):
        super().__init__()
        self.words, self.visual = nn.Embedding(words, width), nn.Linear(visual_width, width)
        self.positions = nn.Embedding(64, width)
        layer = nn.TransformerEncoderLayer(width, 4, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, 9)

    def forward(self, visual: torch.Tensor, name: torch.Tensor, question_first: bool, gap: int = 1 + ANSWER_WORDS) -> torch.Tensor:
        """Cell logits at the answer position: `visual` (B, 9, visual_width), `name` (B, 2) word ids (colour, shape)."""
        def ids(start: int, n: int) -> torch.Tensor:   # the fixed words start .. start + n - 1, for every row
            return torch.arange(start, start + n).expand(len(name), -1)

        question = torch.cat([ids(SYSTEM, QUESTION_WORDS), name], 1)   # "where is the C S"
        after = self.words(ids(SYSTEM + QUESTION_WORDS, gap))           # "?", then the tokens that open the answer
        if question_first:
            x = torch.cat([self.words(ids(0, SYSTEM)), self.words(question), self.visual(visual), after], 1)
        else:
            x = torch.cat([self.words(ids(0, SYSTEM)), self.visual(visual), self.words(question), after], 1)
        x = x + self.positions(torch.arange(x.shape[1]))
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1])
        return self.head(self.encoder(x, mask=mask, is_causal=True)[:, -1])


def run(features, questions, held_out, args, seed: int, question_first: bool, words: int) -> list[dict]:
    torch.manual_seed(seed)
    model = Finder(words, features.shape[-1], args.width, args.layers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)

    def logits(rows):
        return model(features[[r[0] for r in rows]], torch.tensor([[r[1], r[2]] for r in rows]), question_first, args.gap)

    rng, curve = random.Random(seed + 1), []
    hard = [r for r in questions if r[5]]
    for step in range(1, args.steps + 1):
        n_hard = sum(rng.random() < args.confusable for _ in range(args.batch))
        rows = rng.sample(questions, args.batch - n_hard) + rng.sample(hard, n_hard)
        loss = nn.functional.cross_entropy(logits(rows), torch.tensor([r[3] for r in rows]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.eval_every == 0:
            with torch.no_grad():
                right = logits(held_out).argmax(-1) == torch.tensor([r[3] for r in held_out])
            by = {n: round(right[[r[4] == n for r in held_out]].float().mean().item(), 3) for n in sorted({r[4] for r in held_out})}
            needs_colour = torch.tensor([r[5] for r in held_out])
            curve.append({"step": step, "right": round(right.float().mean().item(), 3), "by_objects": by,
                          "shape_shared": round(right[needs_colour].float().mean().item(), 3)})
            print(json.dumps({"seed": seed, **curve[-1]}), flush=True)
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--order", choices=["image-first", "question-first"], default="image-first")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--gap", type=int, default=1 + ANSWER_WORDS,
                        help="fixed tokens between the name (or the image, question first) and the answer position: '?' and the "
                             "chat's answer opening (3); 0 reads the answer at the name's last word")
    parser.add_argument("--confusable", type=float, default=0.0,
                        help="share of each batch drawn from questions whose shape another object shares (the colour is needed)")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--scenes", type=int, default=6000, help="training-stream cases drawn (those with an object are kept)")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    features, scenes = scene_features(args.scenes, seed=5)
    colours = sorted({o.color for s in scenes for o in s.objects})
    shapes = sorted({o.shape for s in scenes for o in s.objects})
    first_name = SYSTEM + QUESTION_WORDS + max(args.gap, 1 + ANSWER_WORDS)   # word ids below are the fixed prompt's
    questions = [(i, first_name + colours.index(o.color), first_name + len(colours) + shapes.index(o.shape),
                  3 * o.position[0] + o.position[1], len(s.objects),
                  any(p is not o and p.shape == o.shape for p in s.objects)) for i, s in enumerate(scenes) for o in s.objects]
    random.Random(0).shuffle(questions)
    held_out, questions = questions[:1000], questions[1000:]
    words = first_name + len(colours) + len(shapes)
    curves = {seed: run(features, questions, held_out, args, seed, args.order == "question-first", words) for seed in args.seeds}
    chance = {n: round(1 / n, 3) for n in sorted({r[4] for r in held_out})}
    report = {"args": {k: str(v) for k, v in vars(args).items()}, "chance_by_objects": chance, "curves": curves}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
