"""A learned thinker in the Think-while-Edit loop on ShapeEdit: gain over the plain editor, per turn, against controls.

Run (tune on shapes-val, report on shapes-bench; the thinker reads no ground truth, only the judge
that scores the results below does):

    python benchmarks/thinker_learned.py --thinker vlm:runs/thinker-sft/final --split shapes-val --phrasing indirect
    python benchmarks/thinker_learned.py --thinker vlm:refine/assets/shapes-thinker --split shapes-bench \\
        --phrasing indirect --out benchmarks/thinker_learned.json

Issue 24's acceptance, with the bundled ShapeEdit editor (Euler, `--steps`), request i seeded i,
and every figure judged by ShapeEdit's exact judge (O = sqrt(IF * CC)):

* plain: the editor alone on the original instruction (= turn 1 of every loop);
* fixed: the loop for exactly `--max-turns` edits, the edit the thinker scores best kept
  (`select="best"`); read from the same run: `select="last"` (the paper's protocol), and the
  turn curve (what max_turns = 1..N would return, best and last), whose steps are the gain per turn;
* early: the loop with its stop rules on the thinker's *own* score (semantic >= `--score-threshold`,
  an unchanged instruction that would repeat an edit, N turns): O, editor calls, and the share of
  the fixed loop's gain it keeps;
* best-of-k: k edits of the original instruction (seeds i, i+1, ...), the one the same thinker
  scores best kept (`BestOfK` + `ThinkerScore`), k = the early loop's mean editor calls, rounded:
  what selection among as many edits gives without any rewrite;
* think-before-edit (`--before`): the thinker rewrites before the first edit (the paper's ablation).

`--min-confidence` gates every loop's rewrites on the thinker's confidence in them
(`LoopConfig.min_confidence`, not in the paper): an unsure rewrite is dropped and the request
keeps its current edit. The report then also replays the gate at several values on the fixed
loop (`gate_sweep_last`: choose one on shapes-val; `--min-confidence 0` records the confidences
and gates nothing). `--select last` makes the early loop and think-before-edit return their
last edit (with the gate: the rewrite's edit when the thinker was sure, else the first edit).

A rewrite-only thinker (`--prompt shapes-rewrite`, `shapes-rewrite-think`, `-grid`, `-locate`, `-scan` or `-scan-read`: the ShapeEdit VLM
fine-tuned on its rewrite question, which cannot critique) runs only plain and think-before-edit
with one edit, the gate replayed at several values, each case edited with `--seeds` seeds in both
arms (`rewrite_only_report`):

    python benchmarks/thinker_learned.py --thinker vlm:runs/vlm-rewrite4/final --prompt shapes-rewrite \
        --min-confidence 0 --seeds 4 --out runs/rewrite-only-val.json

`--split stream:SEED --cases N` runs the same report on the first N training-stream cases of that
seed (cases of no split: to check a gate before val is read; stop 43 used stream 71, 900 cases). The
report's `by_action` gives the gain per action (the rewrite's first word) at each gate.

`--oracle-rewrite` adds an arm that edits every case's canonical direct phrasing with the same
seeds: an oracle (it reads the answer key), reported apart as the ceiling of any rewrite-only
thinker with this editor. The report also splits the rewrites the loop used into right and wrong
ones (against the canonical phrasing: a diagnostic) with what each group gains over plain.

Each line gives the mean O and the paired mean difference against plain with its 95% bootstrap
interval (`refine.compare.stats.mean_ci` over the cases), and the thinker's format rate (replies
the strict parser reads unchanged).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import replace
from itertools import islice
from pathlib import Path

from refine._compat import ensure_torchvision_importable

ensure_torchvision_importable()

import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from refine.backbones.shapes import load_shapes_backbone  # noqa: E402
from refine.compare.stats import mean_ci  # noqa: E402
from refine.editor import compose  # noqa: E402
from refine.rewards.mllm import MODES  # noqa: E402
from refine.rollout.flow_editor import FlowEditor  # noqa: E402
from refine.selection import BestOfK  # noqa: E402
from refine.shapes.data import training_stream  # noqa: E402
from refine.shapes.evaluate import bench_subset  # noqa: E402
from refine.shapes.instructions import COLOR_THINGS, RELATIONS, SHAPE_RIDDLES, STEPS  # noqa: E402
from refine.shapes.judge import judge_meta  # noqa: E402
from refine.thinker.config import ThinkerConfig, build_thinker, refiner_from_config  # noqa: E402
from refine.thinker.data import SEED_STRIDE  # noqa: E402
from refine.thinker.format import parse_thinker_output_strict  # noqa: E402
from refine.thinker.judged import JUDGE_AGAINST  # noqa: E402
from refine.thinker.loop import ThinkWhileEdit, best_edit_index  # noqa: E402
from refine.thinker.prompts import get_prompts  # noqa: E402
from refine.thinker.score_reward import ThinkerScore  # noqa: E402
from refine.thinker.vlm import CONFIDENCE_SPANS  # noqa: E402


def pick_cases(split: str, phrasing: str, n: int | None):
    """`n` cases (all when None) of one phrasing or of both, evenly spaced over the categories (`bench_subset`).

    `split="stream:SEED"` takes the first `n` cases of `training_stream(SEED)` in that phrasing instead:
    cases of no split, to fit a rule on (e.g. the confidence gate) before it is checked on shapes-val.
    """
    if split.startswith("stream:"):
        if n is None or phrasing == "all":
            raise SystemExit("--split stream:SEED needs --cases N and --phrasing direct or indirect")
        stream = training_stream(int(split.removeprefix("stream:")), indirect_fraction=float(phrasing == "indirect"))
        return list(islice(stream, n))
    n = 10**6 if n is None else n
    if phrasing == "all":
        return bench_subset(direct=n - n // 2, indirect=n // 2, split=split)
    return bench_subset(direct=n if phrasing == "direct" else 0, indirect=n if phrasing == "indirect" else 0, split=split)


def score_spearman(rows) -> float | None:
    pairs = [(s, o) for r in rows for s, o in zip(r["thinker_scores"], r["turn_o"]) if s is not None]
    return round(float(spearmanr(*zip(*pairs)).statistic), 4) if len(pairs) > 2 else None


GATE_SWEEP = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def gated_last(row: dict, gate: float) -> float:
    """O of the edit a loop gated at `gate` returns with select="last" (see the report's gate_sweep_last).

    `confidences[t]` is the thinker's confidence in the rewrite it proposed after edit t:
    >>> gated_last({"turn_o": [0.4, 0.9, 0.1], "confidences": [0.8, 0.3, 0.9]}, gate=0.5)
    0.9
    >>> gated_last({"turn_o": [0.4, 0.9, 0.1], "confidences": [0.8, 0.3, 0.9]}, gate=0.9)
    0.4
    """
    for t, confidence in enumerate(row["confidences"][: len(row["turn_o"]) - 1]):
        if confidence is None or confidence < gate:
            return row["turn_o"][t]
    return row["turn_o"][-1]


EARLY_SWEEP = (5.0, 6.0, 7.0, 8.0, 9.0)


def early_replay(row: dict, threshold: float, max_turns: int, select: str = "best") -> tuple[float, int]:
    """(O, editor calls) of the early loop at `threshold`, replayed from the fixed loop's turns.

    The early loop stops after the first edit its thinker scores at least `threshold` (or at
    `max_turns`). Every edit is a function of (instruction, seed) and a greedy thinker's score a
    function of the image, so the fixed loop's first turns are the early loop's, and the replay is
    exact (checked: the early loop run for real gives the same figure at its threshold).
    >>> row = {"turn_o": [0.2, 0.9, 0.5], "thinker_scores": [3.0, 8.5, 9.0]}
    >>> early_replay(row, 8.0, 3), early_replay(row, 9.0, 3, "last"), early_replay(row, 9.0, 3)
    ((0.9, 2), (0.5, 3), (0.5, 3))
    """
    scores = row["thinker_scores"][:max_turns]
    calls = next((t + 1 for t, s in enumerate(scores) if s is not None and s >= threshold), len(scores))
    if select == "last":
        return row["turn_o"][calls - 1], calls
    return row["turn_o"][best_edit_index([{"semantic": s} if s is not None else {} for s in scores[:calls]])], calls


def early_sweep(rows: list[dict], max_turns: int) -> dict:
    """The early loop replayed at `EARLY_SWEEP` thresholds, best and last edit: O, gain over plain, calls."""
    plain = [r["turn_o"][0] for r in rows]
    sweep = {}
    for threshold in EARLY_SWEEP:
        for select in ("best", "last"):
            replays = [early_replay(r, threshold, max_turns, select) for r in rows]
            values = [o for o, _ in replays]
            sweep[f"{threshold:g}/{select}"] = {"O": round(sum(values) / len(values), 4),
                                                 "vs_plain": interval([v - p for v, p in zip(values, plain)]),
                                                 "calls": round(sum(c for _, c in replays) / len(replays), 3)}
    return sweep


def action_of(instruction: str | None) -> str:
    """An instruction's action: its first word, lower-case.

    >>> action_of("Remove the red circle"), action_of(None)
    ('remove', '')
    """
    return ((instruction or "").split()[:1] or [""])[0].lower()


# The indirect references of ShapeEdit's phrasings (refine.shapes.instructions.PHRASES), by what resolving them takes;
# the words come from the phrasings' own tables, so a new relation or riddle is counted without an edit here.
_RELATION_WORDS = "|".join(RELATIONS.values())
REFERENCE_KINDS = {
    "object in a cell": r"the object in the ",                          # a cell's name -> what is there
    "directly beside": rf"directly ({_RELATION_WORDS}) ",                # an object -> the next cell's name
    "one cell": rf"one cell ({'|'.join(STEPS)})\b",
    "relation": rf"the object ({_RELATION_WORDS}) ",
    "superlative": r"the (largest|biggest|smallest) object",
    "shape riddle": "|".join(re.escape(riddle) for riddle, _ in SHAPE_RIDDLES),
    "colour riddle": "the colour of (" + "|".join(re.escape(t) for things in COLOR_THINGS.values() for t in things) + r")\b",
    "same as": r"the same (colour|shape) as ",
    "size of another": r"the same size as |as big as |to match ",
    "corner": r"the (empty|opposite) corner",
}


def reference_kinds(instruction: str) -> list[str]:
    """The kinds of indirect reference in a ShapeEdit instruction (`REFERENCE_KINDS`).

    >>> reference_kinds("move the object in the center one cell up")
    ['object in a cell', 'one cell']
    """
    return [kind for kind, pattern in REFERENCE_KINDS.items() if re.search(pattern, instruction)]


def interval(values) -> dict:
    ci = mean_ci(values)
    return {"mean": round(ci.mean, 4), "low": round(ci.low, 4), "high": round(ci.high, 4)}


def rewrite_only_report(args, cases, requests, editor) -> dict:
    """A rewrite-only thinker (`--prompt shapes-rewrite[-think|-grid|-locate|-scan|-scan-read]`): plain against think-before-edit with one edit.

    The loop is the one `refine compare` runs (think_before_edit, max_turns=1, select="last"), gated
    at `--min-confidence` (0 when not given: every rewrite used). One edit per request, like plain,
    so plain is also the compute-matched best-of-k (k = 1). The gate is replayed at `GATE_SWEEP`
    values: below the gate the loop edits the original instruction with the same seed, which is the
    plain edit (the editor is deterministic per instruction and seed), so the replay is exact.
    With `--seeds n`, every request is edited with n seeds in both arms and a case's O is their
    mean: the paired interval is then over cases with less of the editor's noise in each.
    """
    gate = 0.0 if args.min_confidence is None else args.min_confidence
    config = ThinkerConfig(thinker=args.thinker, prompt=args.prompt, max_new_tokens=args.max_new_tokens, min_confidence=gate,
                           confidence_over=args.confidence_over, think_before_edit=True, max_turns=1, select="last", critique_last_turn=False)
    loop = refiner_from_config(config)
    start = time.perf_counter()
    thinks, instructions = [], []  # the loop's rewrite step and the instruction it edited, per request
    plain_runs, before_runs = [[] for _ in requests], [[] for _ in requests]  # O per seed, per request
    oracle_runs = [[] for _ in requests]  # --oracle-rewrite: the canonical direct phrasing, same seeds
    for i in range(0, len(requests), args.chunk):
        for j, result in enumerate(compose(editor, loop).edit(requests[i : i + args.chunk]), start=i):
            thinks.append(next(step for step in result.steps if step.kind == "think"))
            instructions.append(result.instruction)
            before_runs[j].append(judge_meta(requests[j].meta, result.image).overall)
    # Request i is seeded i, then i + SEED_STRIDE, ... in both arms. The greedy thinker's rewrite does
    # not depend on the seed, so the later seeds edit the instruction the loop chose.
    for repeat in range(args.seeds):
        seeded = [replace(r, seed=r.seed + repeat * SEED_STRIDE) for r in requests]
        arms = [(plain_runs, seeded)] + ([(before_runs, [replace(r, instruction=t) for r, t in zip(seeded, instructions)])] if repeat else [])
        if args.oracle_rewrite:
            arms.append((oracle_runs, [replace(r, instruction=c.direct_instruction) for r, c in zip(seeded, cases)]))
        for runs, asks in arms:
            for i in range(0, len(asks), args.chunk):
                for j, result in enumerate(editor.edit(asks[i : i + args.chunk]), start=i):
                    runs[j].append(judge_meta(asks[j].meta, result.image).overall)
    seconds = time.perf_counter() - start
    rows = []
    for case, request, think, edited, plain, before, oracle in zip(cases, requests, thinks, instructions, plain_runs, before_runs,
                                                                   oracle_runs):
        rows.append({
            "case": request.meta["case_id"], "category": request.meta["category"], "instruction": request.instruction,
            "rewrite": think.instruction, "confidence": think.info["confidence"], "error": think.info["error"],
            "raw": think.info["raw"], "repaired": bool(think.info["repairs"]),
            # diagnostic only (the canonical direct phrasing is ground truth): is the rewrite exactly it?
            "rewrite_is_direct": think.instruction == case.direct_instruction,
            "edited_instruction": edited,
            "plain": sum(plain) / len(plain),  # the mean over --seeds editor seeds
            "before": sum(before) / len(before),
            **({"oracle_rewrite": sum(oracle) / len(oracle)} if oracle else {}),
        })
    plain_o = [r["plain"] for r in rows]

    def line(values) -> dict:
        return {"O": round(sum(values) / len(values), 4), "vs_plain": interval([v - p for v, p in zip(values, plain_o)])}

    def replay(g: float, group: list[dict] = rows) -> list[float]:
        return [r["before"] if r["confidence"] is not None and r["confidence"] >= g else r["plain"] for r in group]

    categories = sorted({r["category"] for r in rows})  # per category: where the rewrite helps and where it hurts
    # per action (the rewrite's first word, from the thinker's own text: no ground truth), gated at each value: whether
    # a gate per action would do better than one gate (stop 43 fit one on stream cases; it did not hold on shapes-val)
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(action_of(r["rewrite"]), []).append(r)
    by_action = {a: {"cases": len(group),
                     "gain_at_gate": {str(g): round(sum(before - plain for before, plain in zip(replay(g, group), (r["plain"] for r in group)))
                                                    / len(group), 4) for g in GATE_SWEEP if g >= gate}}
                 for a, group in sorted(groups.items())}
    by_reference: dict[str, list[dict]] = {kind: [] for kind in REFERENCE_KINDS}  # a row under every kind its instruction holds
    for r in rows:
        for kind in reference_kinds(r["instruction"]):
            by_reference[kind].append(r)
    rewritten = [r for r, request in zip(rows, requests) if r["edited_instruction"] != request.instruction]
    # diagnostic (reads the canonical phrasing): what a right and a wrong rewrite are worth, and how many
    split_gain = {name: {"share": round(len(group) / len(rows), 3),
                         "vs_plain": interval([r["before"] - r["plain"] for r in group]) if len(group) > 1 else None}
                  for name, group in (("right", [r for r in rewritten if r["rewrite_is_direct"]]),
                                      ("wrong", [r for r in rewritten if not r["rewrite_is_direct"]]))}
    return {
        "settings": {k_: (str(v) if isinstance(v, Path) else v) for k_, v in vars(args).items()},
        "cases": len(rows), "k": 1,
        "plain": {"O": round(sum(plain_o) / len(plain_o), 4)},
        "before": {**line([r["before"] for r in rows]), "gate": gate,
                   "rewritten": sum(r["edited_instruction"] != request.instruction for r, request in zip(rows, requests)) / len(rows)},
        "gate_sweep": {str(g): {**line(replay(g)), "rewritten": sum(c >= g for c in (r["confidence"] or 0.0 for r in rows)) / len(rows)}
                       for g in GATE_SWEEP if g >= gate},
        "by_category": {c: {"plain": round(sum(r["plain"] for r in group) / len(group), 4),
                            "before": round(sum(r["before"] for r in group) / len(group), 4),
                            "rewrite_is_direct": round(sum(r["rewrite_is_direct"] for r in group) / len(group), 3)}
                        for c in categories for group in [[r for r in rows if r["category"] == c]]},
        "by_action": by_action,
        # diagnostic (reads the canonical phrasing): the share of exact rewrites per kind of indirect reference
        "by_reference": {kind: {"cases": len(group), "rewrite_is_direct": round(sum(r["rewrite_is_direct"] for r in group) / len(group), 3)}
                         for kind, group in by_reference.items() if group},
        "rewrite_is_direct": sum(r["rewrite_is_direct"] for r in rows) / len(rows),
        "rewrites_at_gate": split_gain,
        # an oracle (reads the answer key): every instruction replaced by its canonical direct phrasing,
        # the ceiling of any rewrite-only thinker with this editor
        **({"oracle_rewrite": line([r["oracle_rewrite"] for r in rows])} if args.oracle_rewrite else {}),
        "failed": sum(r["error"] is not None for r in rows),
        "format_rate": sum(r["error"] is None and not r["repaired"] for r in rows) / len(rows),  # parsed with no repair
        "seconds": seconds,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thinker", default="vlm:refine/assets/shapes-thinker", help="thinker spec (vlm:FOLDER, expert: the oracle)")
    parser.add_argument("--split", default="shapes-val", help="shapes-val to tune, shapes-bench to report, stream:SEED for training-stream cases")
    parser.add_argument("--phrasing", choices=["indirect", "direct", "all"], default="indirect")
    parser.add_argument("--cases", type=int, default=None, help="cases, spread over the split (default: all of the phrasing)")
    parser.add_argument("--max-turns", type=int, default=3)
    parser.add_argument("--score-threshold", type=float, default=8.0, help="the early loop's stop on the thinker's semantic score")
    parser.add_argument("--steps", type=int, default=8, help="editor Euler steps (refine compare's default setting)")
    parser.add_argument("--before", action="store_true", help="also run think-before-edit")
    parser.add_argument("--fixed-only", action="store_true", help="only the fixed loop (a quick look while tuning)")
    parser.add_argument("--prompt", default="thinker-brief", help="the prompt set the thinker was trained with (thinker, thinker-brief)")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--min-confidence", type=float, default=None,
                        help="the loops use a rewrite only when the thinker's confidence in it reaches this (LoopConfig.min_confidence)")
    parser.add_argument("--confidence-over", choices=list(CONFIDENCE_SPANS), default="answer",
                        help="the confidence is the smallest token probability of the rewrite alone or of the whole reply")
    parser.add_argument("--select", choices=["best", "last"], default="best", help="the early loop's and before's selection")
    parser.add_argument("--chunk", type=int, default=96, help="requests per loop call")
    parser.add_argument("--seeds", type=int, default=1,
                        help="rewrite-only thinkers: editor seeds per case in both arms, a case's O their mean")
    parser.add_argument("--oracle-rewrite", action="store_true",
                        help="rewrite-only thinkers: also edit the canonical direct phrasing (an oracle, labelled so: "
                             "the ceiling of any rewrite before one edit)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--judge-mode", choices=list(MODES), default=None,
                        help="the thinker's score of each edit from the rewards layer's MLLM judge in this mode on its own model "
                        "(ThinkerConfig.judge_mode: a rewrite-only model that also judges, e.g. refine/assets/shapes-vlm, runs the loop)")
    parser.add_argument("--judge-against", choices=list(JUDGE_AGAINST), default="original",
                        help="with --judge-mode: score each edit against the user's instruction or the thinker's rewrite")
    parser.add_argument("--judge-model", default=None,
                        help="with --judge-mode: the judge's own model (checkpoint folder or URL); default the thinker's model")
    parser.add_argument("--vary-seed", action="store_true", help="turn t edits with seed + t - 1 (LoopConfig.vary_seed)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--replay", type=Path, default=None,
                        help="print the early loop's threshold sweep (best and last edit) from a saved --out report, and exit")
    args = parser.parse_args()
    if args.replay is not None:
        saved = json.loads(args.replay.read_text())
        print(json.dumps(early_sweep(saved["rows"], saved["settings"]["max_turns"]), indent=1))
        return
    torch.set_num_threads(args.threads)

    cases = pick_cases(args.split, args.phrasing, args.cases)
    requests = [case.to_request(seed=i) for i, case in enumerate(cases)]
    editor = FlowEditor(load_shapes_backbone(), steps=args.steps, batch_size=32)
    if get_prompts(args.prompt).rewrite_only and args.judge_mode is None:
        report = rewrite_only_report(args, cases, requests, editor)
        print(json.dumps({k_: v for k_, v in report.items() if k_ not in ("settings", "rows")}, indent=1))
        if args.out:
            args.out.write_text(json.dumps(report, indent=1) + "\n")
        return
    thinker = build_thinker(ThinkerConfig(thinker=args.thinker, prompt=args.prompt, max_new_tokens=args.max_new_tokens,
                                          min_confidence=args.min_confidence, confidence_over=args.confidence_over,
                                          judge_mode=args.judge_mode, judge_against=args.judge_against,
                                          judge_model=args.judge_model))
    raw_replies: list[str] = []
    think_errors: list[bool] = []

    def run(refiner) -> tuple[list, float]:
        refined, results, start = compose(editor, refiner), [], time.perf_counter()
        for i in range(0, len(requests), args.chunk):
            results += refined.edit(requests[i : i + args.chunk])
        return results, time.perf_counter() - start

    def judged(image, request) -> float:
        return judge_meta(request.meta, image).overall

    loop = dict(max_turns=args.max_turns, score_threshold=args.score_threshold, min_confidence=args.min_confidence,
                vary_seed=args.vary_seed)
    fixed, fixed_s = run(ThinkWhileEdit(thinker, early_stop=False, **loop))
    early, early_s = (fixed, 0.0) if args.fixed_only else run(ThinkWhileEdit(thinker, select=args.select, **loop))
    k = max(1, round(sum(r.meta["thinker"]["editor_calls"] for r in early) / len(early)))
    best_of_k, bok_s = (fixed, 0.0) if args.fixed_only else run(BestOfK(ThinkerScore(thinker), k=k))
    before, before_s = (run(ThinkWhileEdit(thinker, think_before_edit=True, select=args.select, **loop)) if args.before
                        else ([], 0.0))

    rows = []
    for i, request in enumerate(requests):
        edits = [s for s in fixed[i].steps if s.kind == "edit"]
        turn_o = [judged(s.image, request) for s in edits]
        thinks = [s for s in fixed[i].steps if s.kind == "think"]
        raw_replies += [s.info.get("raw") or "" for s in thinks]
        think_errors += [s.info.get("error") is not None for s in thinks]
        rows.append({
            "case": request.meta["case_id"], "category": request.meta["category"],
            "instructions": [s.instruction for s in edits],
            "direct_instruction": cases[i].direct_instruction,
            "turn_o": turn_o,
            "thinker_scores": [s.scores.get("semantic") for s in edits],
            "confidences": fixed[i].meta["thinker"]["confidences"],
            # a loop that stopped early (the thinker failed twice) returns the same for any larger max_turns
            "curve_best": [turn_o[best_edit_index([s.scores for s in edits[: min(t, len(edits))]])] for t in range(1, args.max_turns + 1)],
            "curve_last": [turn_o[min(t, len(edits)) - 1] for t in range(1, args.max_turns + 1)],
            "fixed_stop": fixed[i].meta["thinker"]["stop_reason"],
            "early": judged(early[i].image, request),
            "early_calls": early[i].meta["thinker"]["editor_calls"],
            "early_stop": early[i].meta["thinker"]["stop_reason"],
            "best_of_k": judged(best_of_k[i].image, request),
            "before": judged(before[i].image, request) if before else None,
        })
    plain = [r["turn_o"][0] for r in rows]
    n_turns = args.max_turns

    def line(values) -> dict:
        return {"O": round(sum(values) / len(values), 4), "vs_plain": interval([v - p for v, p in zip(values, plain)])}

    report = {
        "settings": {k_: (str(v) if isinstance(v, Path) else v) for k_, v in vars(args).items()},
        "cases": len(rows), "k": k,
        "plain": {"O": round(sum(plain) / len(plain), 4)},
        "fixed_best": line([r["curve_best"][-1] for r in rows]),
        "fixed_last": line([r["curve_last"][-1] for r in rows]),
        "early": {**line([r["early"] for r in rows]), "calls": sum(r["early_calls"] for r in rows) / len(rows)},
        f"best_of_{k}": line([r["best_of_k"] for r in rows]),
        "thinker_vs_best_of_k": interval([r["early"] - r["best_of_k"] for r in rows]),
        "curve_best": [round(sum(r["curve_best"][t] for r in rows) / len(rows), 4) for t in range(n_turns)],
        "curve_last": [round(sum(r["curve_last"][t] for r in rows) / len(rows), 4) for t in range(n_turns)],
        # diagnostics only (the canonical direct phrasing is ground truth): how often the first rewrite is exactly it
        "rewrite_is_direct": sum(len(r["instructions"]) > 1 and r["instructions"][1] == r["direct_instruction"] for r in rows) / len(rows),
        # does the thinker's own score order edits the way the judge does? (over every critiqued edit)
        "score_spearman": score_spearman(rows),
        # a judged thinker has no EditThinker-format reply: its format is a parsed score and a usable rewrite
        "format_rate_strict": (sum(not e for e in think_errors) / max(1, len(think_errors)) if args.judge_mode else
                               sum(parse_thinker_output_strict(t).error is None for t in raw_replies) / max(1, len(raw_replies))),
        "fixed_stop_reasons": {reason: sum(r["fixed_stop"] == reason for r in rows) for reason in {r["fixed_stop"] for r in rows}},
        "early_stop_reasons": {reason: sum(r["early_stop"] == reason for r in rows) for reason in {r["early_stop"] for r in rows}},
        "seconds": {"fixed": fixed_s, "early": early_s, "best_of_k": bok_s, "before": before_s},
    }
    if before:
        report["before"] = line([r["before"] for r in rows])
    if args.min_confidence is not None:
        # the gate replayed on the fixed loop: a gated loop stops at the first rewrite it is unsure of and,
        # select="last", returns that turn's edit; the editor is deterministic per (instruction, seed), so the
        # fixed loop's edits are the gated loop's up to there
        report["gate_sweep_last"] = {str(g): line([gated_last(r, g) for r in rows]) for g in GATE_SWEEP}
    gain_fixed = report["fixed_best"]["vs_plain"]["mean"]
    report["early_keeps_gain"] = report["early"]["vs_plain"]["mean"] / gain_fixed if gain_fixed > 0 else None
    report["early_sweep"] = early_sweep(rows, n_turns)  # every threshold, both selections, from the fixed loop's turns
    print(json.dumps({k_: v for k_, v in report.items() if k_ != "settings"}, indent=1))
    if args.out:
        args.out.write_text(json.dumps({**report, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
