"""EditThinker's GRPO edit reward on ShapeEdit: what it pays per kind of rewrite, and what it costs.

Run (the figures in refine/thinker/README.md, GRPO section):

    python benchmarks/thinker_grpo_edit_reward.py --cases 8 --steps 8

For each of `--cases` training-stream cases (never a case of any split; `refine thinker data`'s
stream), I_{t-1} is the bundled editor's edit of the source with the user's instruction and the
row's seed, as in the data pipeline. One group of 8 hand-written rollouts is scored by
`EditReward` (the bundled editor at Euler `--steps`, the exact judge `shapes_overall`, an oracle
used as the reward):

* `direct`: the case's direct phrasing (the rewrite an ideal thinker writes);
* `unchanged`: the user's instruction again (with the row's seed this reproduces I_{t-1}: R_edit
  must be exactly 0, the check that the seed is fixed per prompt);
* `other` x 6: instructions of other cases (wrong rewrites).

It prints the mean R_edit per kind, the share of groups where `direct` has the group's highest
reward, and the seconds per completion of the reward (editor + judge, one thread).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from refine.shapes.data import stream_case
from refine.thinker.data import EditorSpec, build_editor
from refine.thinker.grpo import build_judge
from refine.thinker.grpo_rewards import EditReward
from refine.types import EditRequest


def reply(answer: str) -> list[dict]:
    return [{"role": "assistant", "content": f"<think>r</think><score>[5, 10]</score><answer>{answer}</answer>"}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--stream-seed", type=int, default=31)
    args = parser.parse_args()
    torch.set_num_threads(1)

    editor = build_editor(EditorSpec(name="bundled", steps=args.steps))
    reward = EditReward(editor, build_judge("shapes_overall"))
    cases = [stream_case(args.stream_seed, i) for i in range(args.cases)]
    firsts = editor.edit([EditRequest(c.source_image, c.instruction, seed=i, meta=c.to_request(seed=i).meta) for i, c in enumerate(cases)])

    completions, columns, kinds = [], {k: [] for k in ("images", "instruction", "meta", "seed", "trajectory_id", "step")}, []
    for i, (case, first) in enumerate(zip(cases, firsts)):
        others = [cases[(i + j) % len(cases)].direct_instruction for j in range(1, 7)]
        for kind, answer in [("direct", case.direct_instruction), ("unchanged", case.instruction)] + [("other", o) for o in others]:
            completions.append(reply(answer))
            kinds.append(kind)
            columns["images"].append([case.source_image, first.image])
            columns["instruction"].append(case.instruction)
            columns["meta"].append(json.dumps(case.to_request(seed=i).meta))
            columns["seed"].append(i)
            columns["trajectory_id"].append(case.id)
            columns["step"].append(1)

    start = time.perf_counter()
    rewards = reward(completions, **columns)
    seconds = time.perf_counter() - start
    by_kind = {kind: [r for r, k in zip(rewards, kinds) if k == kind] for kind in ("direct", "unchanged", "other")}
    groups = [rewards[g * 8:(g + 1) * 8] for g in range(len(cases))]
    direct_best = sum(group[0] >= max(group) for group in groups) / len(groups)
    print(json.dumps({
        "cases": len(cases), "steps": args.steps,
        "mean_r_edit": {kind: round(statistics.fmean(values), 4) for kind, values in by_kind.items()},
        "unchanged_all_zero": all(v == 0 for v in by_kind["unchanged"]),
        "direct_is_group_best": round(direct_best, 3),
        "judge_before_mean": round(statistics.fmean(d["before"] for d in reward.last), 4),
        "seconds_per_completion": round(seconds / len(completions), 3),
    }, indent=2))


if __name__ == "__main__":
    main()
