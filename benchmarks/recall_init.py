"""Does a fresh language model learn associative recall, and what decides it? The lookup's plateau, in isolation.

    python benchmarks/recall_init.py --init transformers --lr 1e-3      # stays at chance
    python benchmarks/recall_init.py --init torch --untied --lr 3e-4    # learnt by step 500
    python benchmarks/recall_init.py --arch thinker --init torch --untied --lr 3e-4 --save runs/recall/thinker-torch-model
    python benchmarks/lookup_capacity.py --init runs/recall/thinker-torch-model --lr 3e-4 --names canonical --steps 750   # then the drill

Why (issue 24, stop 48): the thinker's rewrite fails on one step, finding a cell from the object in it, and
no format or budget taught it (stops 44-47). This strips that step to multi-query associative recall on
token ids ("k1 v1 | k2 v2 | ... ? k2 v2 k1 v1": the pairs, then every key asked again and answered, the loss
on the answers), 2 to 4 pairs, 16 keys and 16 values, batch 32. A model that only learnt which values are
present and never repeats one gets the first answer right with chance 1 / n; that is the chance reported.

Models: `--arch qwen2` is transformers' `Qwen2ForCausalLM` (the thinker's language model without the
vision tower's multimodal rotary positions); `--arch thinker` is the thinker's own
`Qwen2_5_VLForConditionalGeneration` at the bundle's configuration, text only. `--init transformers`
keeps transformers' initialisation (every weight N(0, 0.02)); `--init torch` re-initialises with
PyTorch's layer defaults (`refine.shapes.vlm.model.torch_default_init`), which needs `--untied`.
Hand-written loop (AdamW, linear warm-up over 50 steps, then constant): the rows are token ids.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refine._compat import ensure_torchvision_importable  # noqa: E402

ensure_torchvision_importable()  # the thinker's configuration imports transformers' vision classes

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration, Qwen2Config, Qwen2ForCausalLM  # noqa: E402

from refine.shapes.vlm.model import torch_default_init  # noqa: E402

BUNDLE = "refine/assets/shapes-thinker-scan"
KEYS, VALUES = list(range(500, 516)), list(range(600, 616))
SEPARATOR, QUERY = 701, 702
VOCAB = 1025   # the bundle's vocabulary size, so both architectures have the same embedding table


def recall_row(rng: random.Random, pairs: tuple[int, int]) -> tuple[list[int], int, int]:
    """(ids, index of the query marker, n): "k v | k v | ... ? k v k v ..." with every key asked once, in a new order."""
    n = rng.randint(*pairs)
    keys, values = rng.sample(KEYS, n), rng.sample(VALUES, n)
    ids = []
    for key, value in zip(keys, values):
        ids += [key, value, SEPARATOR]
    marker = len(ids)
    ids.append(QUERY)
    for i in rng.sample(range(n), n):
        ids += [keys[i], values[i]]
    return ids, marker, n


def build(args) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Linear]:
    """(model, its language model, its lm_head) with fresh weights."""
    torch.manual_seed(args.seed)
    if args.arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(vocab_size=VOCAB, hidden_size=args.hidden, num_attention_heads=args.heads,
                                             num_key_value_heads=args.kv_heads, num_hidden_layers=args.layers,
                                             intermediate_size=4 * args.hidden, tie_word_embeddings=not args.untied))
        return model, model.model, model.lm_head
    config = AutoConfig.from_pretrained(BUNDLE)   # the bundle's shape: 256 wide, 4 layers, 4 heads (2 key-value)
    config.tie_word_embeddings = config.text_config.tie_word_embeddings = not args.untied
    model = Qwen2_5_VLForConditionalGeneration(config)
    return model, model.model.language_model, model.lm_head


def batch(rows: list[tuple[list[int], int, int]]) -> dict:
    length = max(len(ids) for ids, _, _ in rows)
    input_ids = torch.zeros((len(rows), length), dtype=torch.long)
    mask, labels = torch.zeros_like(input_ids), torch.full_like(input_ids, -100)
    for k, (ids, marker, _) in enumerate(rows):
        input_ids[k, :len(ids)], mask[k, :len(ids)] = torch.tensor(ids), 1
        for t in range(marker + 2, len(ids), 2):   # the answers: every value after the query marker
            labels[k, t] = ids[t]
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


@torch.no_grad()
def first_answer(model, rows) -> dict:
    """How often the first answer is right (greedy), beside the chance 1 / n of a model that knows only the values present."""
    model.eval()
    right = sum(model(input_ids=torch.tensor([ids[:marker + 2]])).logits[0, -1].argmax().item() == ids[marker + 2]
                for ids, marker, _ in rows)
    model.train()
    return {"right": round(right / len(rows), 3), "chance": round(sum(1 / n for _, _, n in rows) / len(rows), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=["qwen2", "thinker"], default="qwen2")
    parser.add_argument("--init", choices=["transformers", "torch"], default="transformers")
    parser.add_argument("--untied", action="store_true", help="an lm_head of its own (needed by --init torch)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--pairs", type=int, nargs=2, default=(2, 4))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--save", type=Path, default=None,
                        help="save the trained model here (a start for `lookup_capacity.py --init`: recall first, then the drill)")
    args = parser.parse_args()
    if args.init == "torch" and not args.untied:
        parser.error("--init torch needs --untied: a N(0, 1) embedding as the output head gives logits of std ~sqrt(hidden)")
    torch.set_num_threads(args.threads)
    model, language_model, lm_head = build(args)
    if args.init == "torch":
        torch_default_init(language_model, lm_head)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 50))
    rng, held_out = random.Random(args.seed + 1), [recall_row(random.Random(10_000 + j), args.pairs) for j in range(300)]
    history, start = [], time.time()
    for step in range(1, args.steps + 1):
        loss = model(**batch([recall_row(rng, args.pairs) for _ in range(args.batch)])).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if step % args.eval_every == 0 or step == args.steps:
            history.append({"step": step, "loss": round(loss.item(), 3), **first_answer(model, held_out)})
            print(json.dumps(history[-1]), flush=True)
    report = {"args": {k: str(v) for k, v in vars(args).items()}, "seconds": round(time.time() - start), "history": history}
    if args.save:
        model.save_pretrained(args.save)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
