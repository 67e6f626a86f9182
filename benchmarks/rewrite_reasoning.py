"""How a ShapeEdit VLM checkpoint answers its seeing and rewrite questions, greedy, on the indirect cases of a split.

    python benchmarks/rewrite_reasoning.py runs/vlm-rewrite-scan/final --task rewrite_scan --cases 90
    python benchmarks/rewrite_reasoning.py runs/vlm-where/final --task where
    python benchmarks/rewrite_reasoning.py runs/vlm-lookup/final --task lookup
    python benchmarks/rewrite_reasoning.py refine/assets/shapes-thinker-scan --task rewrite_scan_read --cases 90 --samples 8

A diagnostic that reads the answer key (the canonical rewrite, the scene), so it is never part of a
thinker's path and never a result on its own: it says *where* a model goes wrong, the loop
(`thinker_learned.py`) says whether it helps. For each case's source image it asks the task's question
(`refine.shapes.vlm.tasks.QUESTIONS`) and reports, as JSON on stdout (and `--out`):

* rewrite tasks (`rewrite`, `rewrite_locate`, `rewrite_scan`, `rewrite_scan_read`, ...): the share of
  exact rewrites overall and by kind of indirect reference (`thinker_learned.reference_kinds`); for
  the reasoning formats, the share of exact `<think>` texts, and how many of the `"; "`-separated
  lines the model wrote are lines of the right reasoning (`lines_right` of `lines`; for `rewrite_locate`
  its "X is in the Y" lines, after the cells);
* `where` / `beside` ("Where is the red circle?"): the share of exact cells by the number of objects
  in the scene, beside the chance of naming one of the occupied cells at random;
* `lookup` (the cells given as text, "where is each of these"): the share of right "X is in the Y" lines,
  by the number of objects and for riddle names, beside the same chance.

`--samples N` (rewrite tasks) also samples N replies per case at `--temperature` and reports
self-consistency (Wang et al., 2023): the share of exact majority rewrites, and the greedy rewrite's
exactness by the share of samples that agree with it (the vote share as a confidence for the loop's gate).
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from refine._compat import ensure_torchvision_importable  # noqa: E402

ensure_torchvision_importable()

import torch  # noqa: E402
from thinker_learned import pick_cases, reference_kinds  # noqa: E402

from refine.rewards.backends.transformers_vlm import TransformersVLM  # noqa: E402
from refine.shapes.data import load_split  # noqa: E402
from refine.shapes.vlm.tasks import QUESTIONS, REWRITE_REASONING, SYSTEM_PROMPT, _locate_example, lookup_example  # noqa: E402

# the lines counted in `lines` / `lines_right`: rewrite_locate's cells are one text and its lookups the lines after ". "
LINES = {"rewrite_locate": lambda think: think.partition(". ")[2]}


def conversation(image, text: str) -> list[dict]:
    return [{"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
            {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": text}]}]


def share(flags) -> float | None:
    flags = list(flags)
    return round(sum(flags) / len(flags), 3) if flags else None


def split_reply(reply: str) -> tuple[str | None, str]:
    """(think, answer) of a `<think>...</think><answer>...</answer>` reply; (None, the reply) when it is not one."""
    match = re.fullmatch(r"<think>(.*)</think><answer>(.*)</answer>", reply.strip(), re.S)
    return match.groups() if match else (None, reply.strip())


def vote_report(model: TransformersVLM, conversations, cases, greedy: list[str], samples: int, temperature: float) -> dict:
    """Self-consistency: the majority of `samples` sampled rewrites, and the greedy rewrite's exactness by its vote share."""
    sampled = [model.generate(conversations, max_new_tokens=256, temperature=temperature) for _ in range(samples)]
    majority_exact, by_share = [], collections.defaultdict(list)
    for i, case in enumerate(cases):
        votes = collections.Counter(split_reply(replies[i])[1] for replies in sampled)
        majority_exact.append(votes.most_common(1)[0][0] == case.direct_instruction)
        by_share[votes[greedy[i]] / samples].append(greedy[i] == case.direct_instruction)
    return {"samples": samples, "temperature": temperature, "majority_exact": share(majority_exact),
            "greedy_exact_by_vote_share": {f"{s:.3f}": {"cases": len(v), "exact": share(v)} for s, v in sorted(by_share.items())}}


def rewrite_report(model: TransformersVLM, cases, task: str, samples: int = 0, temperature: float = 1.0) -> dict:
    conversations = [conversation(c.source_image, QUESTIONS[task].format(instruction=c.instruction)) for c in cases]
    replies = model.generate(conversations, max_new_tokens=256)
    rows = []
    for reply, case in zip(replies, cases):
        think, answer = split_reply(reply)
        truth = REWRITE_REASONING[task](case) if task in REWRITE_REASONING else None
        lines_of = LINES.get(task, lambda text: text)
        lines = [line for line in lines_of(think or "").split("; ") if line]
        right_lines = set(lines_of(truth).split("; ")) if truth else set()
        rows.append({"answer": answer, "exact": answer == case.direct_instruction, "think_exact": think == truth if truth is not None else None,
                     "lines": len(lines), "lines_right": sum(line in right_lines for line in lines), "kinds": reference_kinds(case.instruction),
                     "objects": len(case.source.objects), "category": case.category})
    by_kind = collections.defaultdict(list)
    for row in rows:
        for kind in row["kinds"]:
            by_kind[kind].append(row["exact"])

    def by(field: str) -> dict:
        return {str(value): {"cases": len(group), "exact": share(r["exact"] for r in group)}
                for value in sorted({r[field] for r in rows}) for group in [[r for r in rows if r[field] == value]]}

    report = {"task": task, "cases": len(rows), "exact": share(r["exact"] for r in rows),
              "by_reference": {kind: {"cases": len(v), "exact": share(v)} for kind, v in by_kind.items()},
              # what differs between two splits' exactness: how hard their scenes and edits are
              "by_objects": by("objects"), "by_category": by("category")}
    if task in REWRITE_REASONING:
        report.update(think_exact=share(r["think_exact"] for r in rows), lines=sum(r["lines"] for r in rows),
                      lines_right=sum(r["lines_right"] for r in rows),
                      exact_when_think_exact=share(r["exact"] for r in rows if r["think_exact"]),
                      exact_when_think_wrong=share(r["exact"] for r in rows if not r["think_exact"]))
    if samples:
        report["self_consistency"] = vote_report(model, conversations, cases, [r["answer"] for r in rows], samples, temperature)
    return report


def locate_report(model: TransformersVLM, cases, task: str, seed: int) -> dict:
    rng = random.Random(seed)
    asked = [(case, example) for case in cases
             for example in [_locate_example(case, task, case.source, case.source_image, rng)] if example["task"] == task]
    replies = model.generate([conversation(case.source_image, example["prompt"][-1]["content"][-1]["text"]) for case, example in asked],
                             max_new_tokens=12)
    by_count = collections.defaultdict(list)
    for reply, (case, example) in zip(replies, asked):
        by_count[len(case.source.objects)].append(reply.strip() == example["completion"][0]["content"][0]["text"])
    return {"task": task, "cases": len(asked), "exact": share(f for v in by_count.values() for f in v),
            "by_objects": {n: {"cases": len(v), "exact": share(v), "chance_among_occupied": round(1 / n, 3)}
                           for n, v in sorted(by_count.items())}}


def lookup_report(model: TransformersVLM, cases, seed: int) -> dict:
    rng = random.Random(seed)
    asked = [(case, example) for case in cases for example in [lookup_example(case, rng)] if example["task"] == "lookup"]
    replies = model.generate([conversation(case.source_image, example["prompt"][-1]["content"][-1]["text"]) for case, example in asked],
                             max_new_tokens=96)
    by_count, riddles = collections.defaultdict(list), []
    for reply, (case, example) in zip(replies, asked):
        said = dict(line.partition(" is in the ")[::2] for line in reply.strip().split("; "))
        for line in example["completion"][0]["content"][0]["text"].split("; "):
            name, cell = line.split(" is in the ")
            by_count[len(case.source.objects)].append(said.get(name) == cell)
            if re.search(r"colour of|shape with|shape like|round shape", name):
                riddles.append(said.get(name) == cell)
    return {"task": "lookup", "cases": len(asked), "lines_right": share(f for v in by_count.values() for f in v),
            "riddle_lines_right": share(riddles),
            "by_objects": {n: {"lines": len(v), "right": share(v), "chance_among_occupied": round(1 / n, 3)}
                           for n, v in sorted(by_count.items())}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a checkpoint folder of the ShapeEdit VLM")
    parser.add_argument("--task", default="rewrite", choices=["rewrite", *REWRITE_REASONING, "where", "beside", "lookup"])
    parser.add_argument("--split", default="shapes-val",
                        help="a split's indirect cases, or stream:SEED for N fresh training-stream cases (with --cases N)")
    parser.add_argument("--cases", type=int, default=None, help="the first N indirect cases (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="which object a where / beside question asks about (lookup: which names)")
    parser.add_argument("--samples", type=int, default=0, help="rewrite tasks: also sample N replies per case (self-consistency)")
    parser.add_argument("--temperature", type=float, default=1.0, help="the sampling temperature of --samples")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.split.startswith("stream:"):
        cases = pick_cases(args.split, "indirect", args.cases)
    else:
        cases = [case for case in load_split(args.split) if case.phrasing == "indirect"][:args.cases]
    model = TransformersVLM(args.model, batch_size=32)
    if args.task in ("where", "beside"):
        report = locate_report(model, cases, args.task, args.seed)
    elif args.task == "lookup":
        report = lookup_report(model, cases, args.seed)
    else:
        report = rewrite_report(model, cases, args.task, args.samples, args.temperature)
    report.update(model=args.model, split=args.split)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
