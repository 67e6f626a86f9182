"""Does a ShapeEdit VLM find a named object in the image? Greedy `where` / `beside` / `at_position` answers on shapes-val sources.

    python benchmarks/locate_probe.py runs/vlm-torchlm-where/final --task where --out runs/probe-torchlm-where.json

Why (issue 24, stop 49): every rewrite the learned thinker gets wrong needs the lookup from a name to a cell.
Trained from the bundle's transformers-initialised language model, `where` stayed at chance among the occupied
cells (stop 44: 46% with 2 objects against 50%, 29% with 3 against 33%). This asks the same question of any
checkpoint: one question per val case, about its source scene, the object drawn with `random.Random(index)`
(`refine.shapes.vlm.tasks._locate_example`, the training rows' own wording and answers), answered greedily.
The answer is exact or not; reported by object count beside the chance of a model that knows only the occupied
cells (1 / n for `where`). Reads the answer key: a diagnostic, never a thinker.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refine._compat import ensure_torchvision_importable  # noqa: E402

ensure_torchvision_importable()  # transformers' processors import torchvision

import argparse  # noqa: E402
import collections  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402

import torch  # noqa: E402
from rich.progress import track  # noqa: E402
from transformers import AutoModelForImageTextToText, AutoProcessor  # noqa: E402

from refine.shapes.data import load_split  # noqa: E402
from refine.shapes.vlm.data import text_first  # noqa: E402
from refine.shapes.vlm.tasks import seeing_examples  # noqa: E402


def question_rows(split: str, task: str, limit: int | None, question_first: bool = False) -> list[tuple[dict, int]]:
    """(row, objects in the scene) for each case's source: the training rows' own builder, the case's index as seed."""
    rows = []
    for index, case in enumerate(load_split(split)[:limit]):
        # the rows' builder draws the source or the target; asking about the source is asking what the thinker sees
        row = seeing_examples(dataclasses.replace(case, target=case.source), random.Random(index), per_case=1, tasks={task: 1.0}, degrade_rate=0.0)[0]
        if row["task"] == task:   # a scene with nothing to ask about is asked `grid` instead: skipped
            rows.append((text_first(row) if question_first else row, len(case.source.objects)))
    return rows


@torch.no_grad()
def answers(model, processor, rows: list[dict], batch: int = 16) -> list[str]:
    processor.tokenizer.padding_side = "left"
    out = []
    for start in track(range(0, len(rows), batch), description="greedy answers"):
        chunk = rows[start:start + batch]
        texts = [processor.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False) for r in chunk]
        encoded = processor(text=texts, images=[r["images"] for r in chunk], return_tensors="pt", padding=True)
        generated = model.generate(**encoded, max_new_tokens=12, do_sample=False)
        out += [processor.tokenizer.decode(g, skip_special_tokens=True).strip() for g in generated[:, encoded.input_ids.shape[1]:]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--task", choices=["where", "beside", "at_position"], default="where")
    parser.add_argument("--split", default="shapes-val")
    parser.add_argument("--limit", type=int, default=None, help="first N cases of the split")
    parser.add_argument("--question-first", action="store_true", help="the question before the image (a model trained with data.question_first)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(args.model)
    rows = question_rows(args.split, args.task, args.limit, args.question_first)
    got = answers(model, processor, [r for r, _ in rows])
    by_objects = collections.defaultdict(list)
    for (row, objects), answer in zip(rows, got):
        by_objects[objects].append(answer == row["completion"][0]["content"][0]["text"])
    report = {"model": args.model, "task": args.task, "split": args.split, "question_first": args.question_first, "cases": len(rows),
              "exact": round(sum(sum(v) for v in by_objects.values()) / max(len(rows), 1), 3),
              "by_objects": {n: {"cases": len(v), "exact": round(sum(v) / len(v), 3),
                                 **({"chance_among_occupied": round(1 / n, 3)} if args.task == "where" else {})}
                             for n, v in sorted(by_objects.items())},
              "examples": [{"question": next(part["text"] for part in r["prompt"][-1]["content"] if part["type"] == "text"), "answer": a,
                            "truth": r["completion"][0]["content"][0]["text"]} for (r, _), a in list(zip(rows, got))[:6]]}
    print(json.dumps({k: v for k, v in report.items() if k != "examples"}, indent=1))
    for example in report["examples"]:
        print(example)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
