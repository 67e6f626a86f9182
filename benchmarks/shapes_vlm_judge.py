"""The ShapeEdit VLM as a judge: agreement with the exact judge on shapes-val edits of the bundled editor, by mode.

Run:  python benchmarks/shapes_vlm_judge.py --model runs/vlm-shapes/final [--control runs/vlm-shapes/init]
          [--cases 45] [--seeds 4] [--modes score_logit yesno_logit] [--cot-cases 12] [--out judge.json]

1. Edits: `--cases` direct and `--cases` indirect shapes-val cases (`bench_subset`, every category),
   each edited `--seeds` times by the bundled editor (`load_shapes_backbone`, Euler, its default
   steps and guidance; seed `1000 * case + k`). Tuning split only: only `--rewrite-split shapes-bench` reads
   shapes-bench.
2. Labels: the exact judge's O = sqrt(IF x CC) of every edit.
3. The VLM scores every (source, edit, instruction) through `MLLMJudge(TransformersVLM(model), mode)`,
   the rewards layer's unchanged code path, with the case's category as task requirement.
4. Per mode: Spearman's rho with O over all edits (95% bootstrap interval over cases), and pairwise
   accuracy between edits of the same case: over pairs whose O differ by >= 0.05, the fraction the
   judge orders as O does (a tie in the judge's score counts one half) -- Edit-R1's measure for its
   score-logit judge; unlike rho it is not driven by how hard each case is. rho is also given over the
   direct and the indirect cases apart, and every edit's score is kept in the report. `--composite
   score_logit+score_logit_cot` also reports the mean of those modes' scores (the rewards layer's
   `CompositeReward`, as `refine compare` builds `judge: {kind: vlm, mode: [...]}`). `--control` models
   (e.g. the untrained init/) run the same way, as the floor. `--against-rewrite THINKER` scores every
   mode again with each instruction replaced by that rewrite-only thinker's direct phrasing of it
   (`VLMThinker`, prompt `shapes-rewrite-find`; issue 24's `judge_against: rewrite`).
5. Image dependence of the vision tower's output (see `image_dependence`): a collapsed tower shows here.
6. Seeing: exact-match accuracy of greedy answers to the seeing questions (background, count, what
   is in a cell, the full description, every cell: exact, per cell, and per occupied cell) on
   `--seeing-cases` shapes-val sources, and two-image questions on (source, target): what differs,
   and a cell where they differ of one of the two (`pair_at`), and what each holds that the other does not (`not_in`,
   both ways); and the grid of `--output-grids` of the edits themselves, scored
   against what the exact parser reads in them, stray marks included (`describe_parsed_grid`): what
   the judge must see to tell two edits of one input apart.
7. Image use (`--contrast-cases`): per case, the judge's score (score_logit) of the target, the
   unchanged source and pure noise under the case's own prompt: a judge that reads the output
   image scores the target above the other two; one that judges from the instruction scores all
   three alike (stop 35 found every judge trained until then did). By category too (stop 57: a score
   that counts objects tells an add from the source and a recolour not). `--sparse-cases`: the same on
   cases whose sources hold 0-3 objects (`data.sparse_cases`), by source objects.
8. Rewrite (`--rewrite-cases`): EditThinker's rewrite alone, the `rewrite` seeing question on that
   many indirect shapes-val cases (source image, instruction) -> the exact canonical direct phrasing
   (`case.direct_instruction`, read only to score; the share of exact answers, and by category).
   With `--rewrite-edit`, what the rewrite is worth to the editor: the bundled editor (Euler,
   `--rewrite-edit` steps, case i seeded i) on the original instruction (plain), on the model's
   rewrite (think-before-edit with a rewrite-only model) and on the exact direct phrasing (the oracle
   ceiling of any rewrite), O and the paired difference against plain with its 95% interval.
   The rewrite's confidence (its least probable chosen token) gates it: per `--rewrite-gates` value,
   the share rewritten, the share of those that are right, and with `--rewrite-edit` the O of the
   gated rewrite (the original instruction where the confidence falls below the gate). Gates are
   chosen on shapes-val; `--rewrite-split shapes-bench` reports a chosen gate once.
9. Cost: CPU seconds per item of `score_logit` (one prefill) and of reasoning-first scoring
   (`score_sample_cot`), with the prefill and the per-token decode time measured apart.

Slow modes (the `_cot` ones) run on the first `--cot-cases` cases only. For them the report also says how much of
the `score_read` reasoning (`tasks.read_reasoning`) was written right, step by step (`read_reasoning_accuracy`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import random
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import mannwhitneyu, spearmanr

from refine._compat import ensure_torchvision_importable

ensure_torchvision_importable()

from refine.backbones.shapes import load_shapes_backbone  # noqa: E402
from refine.compare.stats import mean_ci, same_input_pairwise_accuracy  # noqa: E402
from refine.rewards.backends.transformers_vlm import TransformersVLM  # noqa: E402
from refine.rewards.base import CompositeReward  # noqa: E402
from refine.rewards.mllm import MLLMJudge  # noqa: E402
from refine.rollout.flow_editor import FlowEditor  # noqa: E402
from refine.shapes.evaluate import bench_subset  # noqa: E402
from refine.shapes.judge import judge_edit, parse_image  # noqa: E402
from refine.shapes.degrade import noise_image  # noqa: E402
from refine.shapes.vlm.data import sparse_cases  # noqa: E402
from refine.shapes.vlm.probes import image_dependence as probe_image_dependence  # noqa: E402
from refine.shapes.vlm.tasks import (  # noqa: E402
    QUESTIONS, SYSTEM_PROMPT, _name, describe_difference, describe_not_in, describe_grid, describe_parsed_grid, describe_scene, read_reasoning)
from refine.shapes.world import POSITION_NAMES, POSITIONS  # noqa: E402
from refine.thinker.protocol import ThinkRequest  # noqa: E402
from refine.thinker.vlm import VLMThinker  # noqa: E402

MIN_GAP = 0.05


def editor_edits(cases, seeds: int) -> list[dict]:
    backbone = load_shapes_backbone()
    editor = FlowEditor(backbone, steps=backbone.default_steps, batch_size=32)
    requests = [(i, k, case.to_request(seed=1000 * i + k)) for i, case in enumerate(cases) for k in range(seeds)]
    with torch.no_grad():
        results = editor.edit([r for _, _, r in requests])
    rows = []
    for (i, k, request), result in zip(requests, results):
        case = cases[i]
        rows.append({"case": i, "seed": k, "source": case.source_image, "output": result.image, "instruction": case.instruction,
                     "meta": request.meta, "overall": judge_edit(case.source_image, result.image, case).overall})
    return rows


def pairwise_accuracy(rows: list[dict], scores: list[float]) -> tuple[float, int]:
    by_case: dict[int, list[tuple[float, float]]] = {}
    for row, score in zip(rows, scores):
        by_case.setdefault(row["case"], []).append((score, row["overall"]))
    accuracy, pairs = same_input_pairwise_accuracy(by_case.values(), min_gap=MIN_GAP)
    return (float("nan") if accuracy is None else accuracy), pairs


def input_level(rows: list[dict], scores: list[float]) -> dict:
    """Where a global Spearman comes from: the order of inputs, or the order of one input's edits.

    - `inputs`: Spearman of the judge's mean score per input with the mean O per input (the inputs' order);
    - `by_input_mean`: Spearman with O of every edit scored by its input's mean score, which drops what the judge
      says about one edit against its siblings; next to the raw figure it shows what that adds;
    - `input_mean_O` (a reference that reads the labels): every edit scored by its input's mean O, a judge that
      orders the inputs perfectly and the edits of one input not at all.
    """
    labels = np.array([r["overall"] for r in rows])
    values = np.array(scores, dtype=float)
    case = np.array([r["case"] for r in rows])
    cases = sorted(set(case.tolist()))
    mean_score = {c: values[case == c].mean() for c in cases}
    mean_label = {c: labels[case == c].mean() for c in cases}
    return {"inputs": float(spearmanr([mean_score[c] for c in cases], [mean_label[c] for c in cases]).statistic),
            "by_input_mean": float(spearmanr([mean_score[c] for c in case], labels).statistic),
            "input_mean_O": float(spearmanr([mean_label[c] for c in case], labels).statistic)}


def spearman_ci(rows: list[dict], scores: list[float], draws: int = 1000) -> tuple[float, float, float]:
    labels = np.array([r["overall"] for r in rows])
    values = np.array(scores)
    rho = float(spearmanr(values, labels).statistic)
    cases = sorted({r["case"] for r in rows})
    members = {c: [i for i, r in enumerate(rows) if r["case"] == c] for c in cases}
    rng = random.Random(0)
    boot = []
    for _ in range(draws):
        picked = [i for c in rng.choices(cases, k=len(cases)) for i in members[c]]
        boot.append(spearmanr(values[picked], labels[picked]).statistic)
    low, high = np.nanpercentile(boot, [2.5, 97.5])
    return rho, float(low), float(high)


def score_mode(judge: MLLMJudge | CompositeReward, rows: list[dict], cases=None) -> dict:
    """Agreement of one judge (one mode, or `CompositeReward` of several) with O over `rows`, overall and by phrasing."""
    mode = judge.mode if isinstance(judge, MLLMJudge) else judge.name
    cpu = time.process_time()
    out = judge([r["source"] for r in rows], [r["output"] for r in rows], [r["instruction"] for r in rows], [r["meta"] for r in rows])
    cpu = time.process_time() - cpu
    kept = [(r, s) for r, s in zip(rows, out.scores) if s is not None]
    kept_rows, scores = [r for r, _ in kept], [s for _, s in kept]
    rho, low, high = spearman_ci(kept_rows, scores) if len(kept) > 2 else (float("nan"),) * 3
    accuracy, pairs = pairwise_accuracy(kept_rows, scores)
    by_phrasing = {}
    for phrasing in ("direct", "indirect"):
        picked = [(r["overall"], s) for r, s in kept if r["meta"]["phrasing"] == phrasing]
        if len(picked) > 2:
            by_phrasing[phrasing] = float(spearmanr([s for _, s in picked], [o for o, _ in picked]).statistic)
    failures = judge.failures if isinstance(judge, MLLMJudge) else {}  # a composite's parts report their own
    result = {"mode": mode, "items": len(rows), "scored": len(kept), "spearman": rho, "spearman_ci95": [low, high],
              "spearman_by_phrasing": by_phrasing, "pairwise_accuracy": accuracy, "pairs": pairs,
              "input_level": input_level(kept_rows, scores) if len(kept) > 2 else {},
              "cpu_s_per_item": cpu / len(rows), "mean_score": float(np.mean(scores)) if scores else None,
              "failures": dict(failures), "scores": list(out.scores)}
    if isinstance(judge, MLLMJudge) and judge.cot:
        texts = [d.get("raw", d.get("reasoning", "")) for d in out.details]
        result["mean_generated_tokens"] = float(np.mean([len(judge.backend.tokenizer.encode(t)) for t in texts]))
        if cases is not None:
            result["reasoning"] = read_reasoning_accuracy(rows, texts, cases)
    return result


def against_rewrite(backend: TransformersVLM, thinker: str, rows: list[dict], cot_rows: list[dict], modes, cot_modes) -> list[dict]:
    """Every mode again, each edit judged against the thinker's direct rewrite of its instruction (one per case)."""
    rewriter = VLMThinker.from_spec(thinker, prompts="shapes-rewrite-find")
    first = {r["case"]: r for r in reversed(rows)}
    thoughts = rewriter.think([ThinkRequest(r["source"], None, r["instruction"], r["instruction"], 0, r["meta"]) for r in first.values()])
    rewrite = {case: t.instruction or r["instruction"] for (case, r), t in zip(first.items(), thoughts)}
    indirect = [c for c, r in first.items() if r["meta"]["phrasing"] == "indirect"]
    exact = float(np.mean([rewrite[c] == first[c]["meta"]["direct_instruction"] for c in indirect])) if indirect else float("nan")
    print(f"{thinker}: rewrite exact on {len(indirect)} indirect cases {exact:.3f}")
    results = []
    for mode in [*modes, *cot_modes]:
        asked = [{**r, "instruction": rewrite[r["case"]]} for r in (cot_rows if mode in cot_modes else rows)]
        result = score_mode(MLLMJudge(backend, mode=mode, cache=False), asked)
        results.append({**result, "mode": f"{mode} against the rewrite", "rewrite_exact_indirect": exact})
    return results


def read_reasoning_accuracy(rows: list[dict], texts: list[str], cases) -> dict:
    """How much of the `score_read` reasoning (`tasks.read_reasoning`) the judge wrote right, step by step.

    Per edit: the whole reasoning exact (either kind's); the edit said directly ("edit: <the case's direct phrasing>"); per checked
    cell of the exact judge, the line's start right ("middle right: nothing -> small white triangle") and, of
    those, what it found there right (the parser's reading) and the verdict right.
    """
    exact = edit = 0
    wants = founds = verdicts = lines = 0
    for row, text in zip(rows, texts):
        case = cases[row["case"]]
        score = judge_edit(case.source_image, row["output"], case)
        ideal = read_reasoning(case, score)
        written = text.split('"Reasoning": "', 1)[-1].split('",')[0]
        exact += written in (ideal, read_reasoning(case, score, every_cell=True))   # score_read's or score_walk's
        edit += f"edit: {case.direct_instruction}." in written
        for line in ideal.split(f"edit: {case.direct_instruction}. ", 1)[-1].split("; "):
            lines += 1
            want, _, rest = line.partition(", found ")
            got = next((w for w in written.split(". ")[-1].split("; ") if w.startswith(want + ", found ")), None)
            if got is None:
                continue
            wants += 1
            founds += got.partition(", found ")[2].rsplit(", ", 1)[0] == rest.rsplit(", ", 1)[0]
            verdicts += got.rsplit(", ", 1)[-1] == rest.rsplit(", ", 1)[-1]
    n = max(1, len(rows))
    return {"exact": exact / n, "edit_right": edit / n, "check_lines": lines, "want_right": wants / max(1, lines),
            "found_right_given_want": founds / max(1, wants), "verdict_right_given_want": verdicts / max(1, wants)}


def prefill_decode_costs(backend: TransformersVLM, rows: list[dict], tokens: int = 32) -> dict:
    """CPU seconds per item of one prefill (score_logit's whole cost) and of one decode step."""
    judge = MLLMJudge(backend, mode="score_sample_cot", cache=False)
    conversations = [judge.conversation(r["source"], r["output"], judge.user_text(r["instruction"], r["meta"])) for r in rows]
    inputs = backend._encode(conversations, None)
    with torch.inference_mode():
        start = time.process_time()
        backend.model(**inputs, logits_to_keep=1)
        prefill = time.process_time() - start
        start = time.process_time()
        backend.model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        generate = time.process_time() - start
    per_item_prefill = prefill / len(rows)
    return {"prefill_s_per_item": per_item_prefill, "decode_s_per_token_per_item": (generate - prefill) / tokens / len(rows),
            "prompt_tokens": int(inputs["input_ids"].shape[1]), "batch": len(rows)}


def image_dependence(backend: TransformersVLM, rows: list[dict], images: int = 8) -> float:
    """`refine.shapes.vlm.probes.image_dependence` on `images` of the edits' sources (near 0: a collapsed tower)."""
    sources = [r["source"] for r in rows[:: max(1, len(rows) // images)]][:images]
    return probe_image_dependence(backend.model, backend.processor, sources)


def _chat(images: list, question: str) -> list[dict]:
    """A seeing question as the seeing tasks ask it (refine.shapes.vlm.tasks): system prompt, images, question."""
    return [{"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
            {"role": "user", "content": [*({"type": "image", "image": image} for image in images), {"type": "text", "text": question}]}]


def seeing_accuracy(backend: TransformersVLM, cases) -> dict[str, float]:
    """Exact-match accuracy of greedy answers to the seeing questions on the cases' source scenes."""
    rng = random.Random(0)
    asks = []
    for case in cases:
        scene = case.source
        position = rng.choice(POSITIONS)
        source = [case.source_image]
        asks += [("background", source, QUESTIONS["background"], scene.background),
                 ("count", source, QUESTIONS["count"], str(len(scene.objects))),
                 ("at_position", source, QUESTIONS["at_position"].format(position=POSITION_NAMES[position]), _name(scene.at(position))),
                 ("describe", source, QUESTIONS["describe"], describe_scene(scene)),
                 ("grid", source, QUESTIONS["grid"], describe_grid(scene))]
    # two images, the case's source and target: what differs, and a cell where they differ of one of them
    # (a model that cannot tell the two images apart fails both; a judge must compare an edit with its source)
    for case in cases:
        images = [case.source_image, case.target_image]
        asks.append(("difference", images, QUESTIONS["difference"], describe_difference(case.source, case.target)))
        differing = [p for p in POSITIONS if case.source.at(p) != case.target.at(p)]
        if differing:
            position, which = rng.choice(differing), rng.randrange(2)
            question = QUESTIONS["pair_at"].format(position=POSITION_NAMES[position], which=("first", "second")[which])
            asks.append(("pair_at", images, question, _name((case.source, case.target)[which].at(position))))
        # what the edit added, and what it took away: the comparison a judge makes (tasks._not_in_example)
        asks.append(("not_in", images, QUESTIONS["not_in"].format(which="second", other="first"),
                     describe_not_in(case.target, case.source)))
        asks.append(("not_in", images, QUESTIONS["not_in"].format(which="first", other="second"),
                     describe_not_in(case.source, case.target)))
    chats = [_chat(images, question) for _, images, question, _ in asks]
    answers = backend.generate(chats, max_new_tokens=96)  # a grid answer is up to ~55 tokens
    hits: dict[str, list[float]] = {}
    for (task, _, _, truth), answer in zip(asks, answers):
        hits.setdefault(task, []).append(float(answer.strip() == truth))
        if task == "grid":  # and cell by cell (a model never trained on the grid question scores ~0 here)
            said = answer.strip().split("; ")
            right = [i < len(said) and said[i] == cell for i, cell in enumerate(truth.split("; "))]
            hits.setdefault("grid_cells", []).append(float(np.mean(right)))
            # the occupied cells only: answering "nothing" everywhere scores ~0.68 above, 0 here
            occupied = [ok for ok, cell in zip(right, truth.split("; ")) if not cell.endswith(": nothing")]
            hits.setdefault("grid_objects", []).extend(float(ok) for ok in occupied)
    return {task: float(np.mean(values)) for task, values in hits.items()}


def generate_with_confidence(backend: TransformersVLM, chats: list, max_new_tokens: int = 40) -> tuple[list[str], list[float]]:
    """Greedy answers and each answer's confidence: the smallest probability the model gave a token of it.

    A rewrite is as wrong as its least certain word (one wrong shape or cell word spoils it), so the
    minimum, not the mean, is the gate; stop 38 measured both (AUC 0.75-0.80 for the minimum on
    shapes-val and fresh stream cases, 0.77-0.82 for the summed log-probability).
    """
    replies = backend.generate_scored(chats, max_new_tokens=max_new_tokens)
    return [reply.text.strip() for reply in replies], [reply.min_prob() for reply in replies]


GATES = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95)


def rewrite_accuracy(backend: TransformersVLM, cases, edit_steps: int = 0, gates: tuple[float, ...] = GATES) -> dict:
    """The share of `cases` whose instruction the model rewrites exactly into its direct phrasing, overall and by category.

    Also how well the rewrite's own confidence (`generate_with_confidence`) tells right rewrites from
    wrong ones (AUC) and, per confidence gate, the share rewritten and how many of those are right.
    With `edit_steps`, the O of the bundled editor on the original instruction, the rewrite, the
    gated rewrite (the rewrite where its confidence reaches the gate, else the original
    instruction) and the exact direct phrasing (oracle), each against plain with its paired 95%
    interval; and on the cases rewritten wrong, plain against rewrite.
    """
    chats = [_chat([case.source_image], QUESTIONS["rewrite"].format(instruction=case.instruction)) for case in cases]
    answers, confidence = generate_with_confidence(backend, chats)
    confidence = np.array(confidence)
    right = np.array([answer == case.direct_instruction for case, answer in zip(cases, answers)])
    hits: dict[str, list[float]] = {}
    for case, ok in zip(cases, right):
        for key in ("exact", f"exact/{case.category}"):
            hits.setdefault(key, []).append(float(ok))
    examples = [{"instruction": c.instruction, "rewrite": a, "direct": c.direct_instruction} for c, a in zip(cases[:6], answers)]
    auc = (float(mannwhitneyu(confidence[right], confidence[~right]).statistic / (right.sum() * (~right).sum()))
           if 0 < right.sum() < len(cases) else None)
    report = {"cases": len(cases), **{key: float(np.mean(values)) for key, values in hits.items()}, "confidence_auc": auc,
              "gates": {str(g): {"rewritten": float((confidence >= g).mean()),
                                 "exact_among_rewritten": float(right[confidence >= g].mean()) if (confidence >= g).any() else None}
                        for g in gates},
              "examples": examples}
    if edit_steps:
        editor = FlowEditor(load_shapes_backbone(), steps=edit_steps, batch_size=32)
        requests = [case.to_request(seed=i) for i, case in enumerate(cases)]

        def overall(instructions: list[str]) -> np.ndarray:
            asked = [dataclasses.replace(r, instruction=text) for r, text in zip(requests, instructions)]
            with torch.no_grad():
                return np.array([judge_edit(c.source_image, out.image, c).overall for c, out in zip(cases, editor.edit(asked))])

        plain, rewritten = overall([c.instruction for c in cases]), overall(answers)
        direct = overall([c.direct_instruction for c in cases])
        # the editor is deterministic per (instruction, seed): a gated run is plain or rewrite case by case
        gated = {str(g): np.where(confidence >= g, rewritten, plain) for g in gates}
        report["edit"] = {"plain": float(plain.mean()), "rewrite": float(rewritten.mean()), "direct_oracle": float(direct.mean()),
                          "rewrite_vs_plain": mean_ci(rewritten - plain).to_json(), "direct_vs_plain": mean_ci(direct - plain).to_json(),
                          "gated": {g: {"O": float(o.mean()), "vs_plain": mean_ci(o - plain).to_json()} for g, o in gated.items()},
                          "wrong_rewrites": {"plain": float(plain[~right].mean()) if (~right).any() else None,
                                             "rewrite": float(rewritten[~right].mean()) if (~right).any() else None}}
    return report


def _scores(judge: MLLMJudge, cases, outputs) -> np.ndarray:
    """The judge's score of each case's `outputs` image against its source, under the case's own prompt."""
    sources, instructions = [case.source_image for case in cases], [case.instruction for case in cases]
    metas = [case.to_request().meta for case in cases]
    return np.array(judge(sources, outputs, instructions, metas).scores, dtype=float)


def image_use(backend: TransformersVLM, cases) -> dict[str, float]:
    """score_logit of each case's target, source and noise under the case's own prompt (see the module docstring, 7)."""
    judge = MLLMJudge(backend, mode="score_logit", cache=False)
    outputs = {"target": [case.target_image for case in cases], "source": [case.source_image for case in cases],
               "noise": [noise_image(case.size, seed=i) for i, case in enumerate(cases)]}
    scores = {name: _scores(judge, cases, images) for name, images in outputs.items()}
    above = scores["target"] > scores["source"]
    categories = sorted({case.category for case in cases})
    return {**{f"mean_{name}": float(values.mean()) for name, values in scores.items()},
            "target_above_source": float(above.mean()),
            "target_above_noise": float((scores["target"] > scores["noise"]).mean()),
            # which edits the score sees: a bare score that only counts objects tells adds, not recolours
            "target_above_source_by_category": {c: float(above[[case.category == c for case in cases]].mean()) for c in categories}}


def sparse_image_use(backend: TransformersVLM, count: int, seed: int = 12345) -> dict[str, dict[str, float]]:
    """score_logit of the target and of the untouched source of `count` sparse cases (`data.sparse_cases`, a seed no
    training stage uses), by how many objects the source holds: where the comparison curriculum starts (0) and goes."""
    judge = MLLMJudge(backend, mode="score_logit", cache=False)
    cases = sparse_cases(seed, count)
    target = _scores(judge, cases, [case.target_image for case in cases])
    source = _scores(judge, cases, [case.source_image for case in cases])
    objects = np.array([len(case.source.objects) for case in cases])
    report = {}
    for n in sorted(set(objects.tolist())):
        mask = objects == n
        report[str(n)] = {"cases": int(mask.sum()), "mean_target": float(target[mask].mean()), "mean_source": float(source[mask].mean()),
                          "target_above_source": float((target[mask] > source[mask]).mean())}
    return report


def _rounded(values: dict) -> dict:
    """`values` with its floats, and those of nested dicts, to 3 decimals (for printing)."""
    return {k: _rounded(v) if isinstance(v, dict) else round(v, 3) for k, v in values.items()}


def output_grid_accuracy(backend: TransformersVLM, rows: list[dict]) -> dict[str, float]:
    """The grid of editor outputs, scored against the exact parser's reading (stray marks included).

    `grid_exact`: the whole answer; `cells`: every cell; `objects`: cells the parser finds an object
    in; `marked`: cells with stray marks (the object "with stray marks", or "unrecognisable marks").
    """
    chats = [_chat([r["output"]], QUESTIONS["grid"]) for r in rows]
    answers = backend.generate(chats, max_new_tokens=120)
    hits: dict[str, list[float]] = {}
    for row, answer in zip(rows, answers):
        truth = describe_parsed_grid(parse_image(row["output"]))
        hits.setdefault("grid_exact", []).append(float(answer.strip() == truth))
        said = answer.strip().split("; ")
        for i, cell in enumerate(truth.split("; ")):
            ok = float(i < len(said) and said[i] == cell)
            hits.setdefault("cells", []).append(ok)
            if not cell.endswith((": nothing", ": unrecognisable marks")):
                hits.setdefault("objects", []).append(ok)
            if cell.endswith(("with stray marks", ": unrecognisable marks")):
                hits.setdefault("marked", []).append(ok)
    return {name: float(np.mean(values)) for name, values in hits.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--control", nargs="*", default=[])
    parser.add_argument("--cases", type=int, default=45, help="direct and indirect shapes-val cases each")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--modes", nargs="+", default=["score_logit", "yesno_logit", "score_sample"])
    parser.add_argument("--cot-modes", nargs="*", default=["score_sample_cot"])
    parser.add_argument("--cot-cases", type=int, default=12)
    parser.add_argument("--composite", nargs="*", default=[], metavar="MODE+MODE",
                        help="also report the mean of these modes' scores (CompositeReward, equal weights), e.g. "
                        "score_logit+score_logit_cot; each mode must be in --modes or --cot-modes")
    parser.add_argument("--against-rewrite", metavar="THINKER",
                        help="also score every mode against this rewrite-only thinker's rewrite of each instruction "
                        "(a folder, e.g. refine/assets/shapes-thinker-find)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeing-cases", type=int, default=30, help="shapes-val sources asked the seeing questions (0: skip)")
    parser.add_argument("--output-grids", type=int, default=0, help="edits asked their grid, scored against the exact parser (0: skip)")
    parser.add_argument("--contrast-cases", type=int, default=0, help="cases whose target, source and noise are scored (0: skip)")
    parser.add_argument("--sparse-cases", type=int, default=0,
                        help="sparse cases (sources of 0-3 objects) whose target and source are scored (0: skip)")
    parser.add_argument("--rewrite-cases", type=int, default=0, help="indirect cases asked the rewrite question (0: skip)")
    parser.add_argument("--rewrite-split", default="shapes-val", choices=["shapes-val", "shapes-bench"],
                        help="split of the rewrite cases: tune on shapes-val, report once on shapes-bench")
    parser.add_argument("--rewrite-gates", type=float, nargs="+", default=list(GATES),
                        help="confidence gates of the gated rewrite (the smallest chosen-token probability)")
    parser.add_argument("--rewrite-edit", type=int, default=0, metavar="STEPS",
                        help="also edit with plain / rewrite / direct instructions at this many editor steps (0: skip)")
    parser.add_argument("--seeing-only", action="store_true", help="only the seeing questions (a model trained on no judge task)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--edits-cache", type=Path, help="pickle of the edits: written once, read back by later runs with the same cases/seeds")
    args = parser.parse_args()
    for modes in args.composite:
        if len(modes.split("+")) < 2 or not set(modes.split("+")) <= {*args.modes, *args.cot_modes}:
            parser.error(f"--composite {modes}: join two or more of the --modes / --cot-modes with '+'")
    torch.set_num_threads(args.threads)

    cases = bench_subset(direct=args.cases, indirect=args.cases, split="shapes-val")
    if args.edits_cache is not None and args.edits_cache.is_file():
        rows = pickle.loads(args.edits_cache.read_bytes())
        if len(rows) != len(cases) * args.seeds:
            raise SystemExit(f"{args.edits_cache} holds {len(rows)} edits, not {len(cases)} x {args.seeds}; remove it or match --cases/--seeds")
    else:
        rows = editor_edits(cases, args.seeds)
        if args.edits_cache is not None:
            args.edits_cache.write_bytes(pickle.dumps(rows))
    labels = [r["overall"] for r in rows]
    report = {"cases": len(cases), "edits": len(rows), "mean_O": float(np.mean(labels)), "models": {}}
    print(f"{len(rows)} edits of {len(cases)} shapes-val cases, mean O {np.mean(labels):.3f}")
    cot_rows = [r for r in rows if r["case"] < args.cot_cases]
    for model in [args.model, *args.control]:
        backend = TransformersVLM(model, batch_size=16)
        if args.seeing_cases:
            seeing = seeing_accuracy(backend, cases[: args.seeing_cases])
            report["models"].setdefault(model, {})["seeing"] = seeing
            print(model, "seeing accuracy", json.dumps({k: round(v, 3) for k, v in seeing.items()}),
                  "image dependence", round(image_dependence(backend, rows), 4))
        if args.output_grids:
            outputs = output_grid_accuracy(backend, rows[:: max(1, len(rows) // args.output_grids)][: args.output_grids])
            report["models"].setdefault(model, {})["output_grid"] = outputs
            print(model, "editor outputs' grid (exact parser)", json.dumps({k: round(v, 3) for k, v in outputs.items()}))
        if args.contrast_cases:
            use = image_use(backend, cases[: args.contrast_cases])
            report["models"].setdefault(model, {})["image_use"] = use
            print(model, "image use (score_logit of target / source / noise)", json.dumps(_rounded(use)))
        if args.sparse_cases:
            sparse = sparse_image_use(backend, args.sparse_cases)
            report["models"].setdefault(model, {})["sparse_image_use"] = sparse
            print(model, "sparse cases by source objects (score_logit of target / source)", json.dumps(_rounded(sparse)))
        if args.rewrite_cases:
            rewrite = rewrite_accuracy(backend, bench_subset(direct=0, indirect=args.rewrite_cases, split=args.rewrite_split),
                                       args.rewrite_edit, tuple(args.rewrite_gates))
            report["models"].setdefault(model, {})["rewrite"] = rewrite
            print(model, "rewrite", json.dumps(rewrite))
        if args.seeing_only:
            continue
        # cache=True only lets a composite below read its parts' scores back; no edit is scored twice in a mode
        judges = {mode: MLLMJudge(backend, mode=mode) for mode in [*args.modes, *args.cot_modes]}
        results = [score_mode(judges[mode], rows) for mode in args.modes]
        results += [score_mode(judges[mode], cot_rows, cases) for mode in args.cot_modes]
        for modes in args.composite:
            parts = modes.split("+")
            composite = CompositeReward({m: judges[m] for m in parts}, name=modes)  # equal weights: their mean
            result = score_mode(composite, cot_rows if set(parts) & set(args.cot_modes) else rows)
            # its parts' scores come from their caches, so its cost is theirs: one call of each mode per edit
            result["cpu_s_per_item"] = sum(r["cpu_s_per_item"] for r in results if r["mode"] in parts)
            results.append(result)
        if args.against_rewrite:
            results += against_rewrite(backend, args.against_rewrite, rows, cot_rows, args.modes, args.cot_modes)
        report["models"].setdefault(model, {}).update({"modes": results, "cost": prefill_decode_costs(backend, rows[:16]),
                                   "image_dependence": image_dependence(backend, rows)})
        for r in results:
            by = " ".join(f"{k} {v:+.3f}" for k, v in r["spearman_by_phrasing"].items())
            print(f"{model} {r['mode']:>18}: rho {r['spearman']:+.3f} [{r['spearman_ci95'][0]:+.3f}, {r['spearman_ci95'][1]:+.3f}] ({by}) "
                  f"pairwise {r['pairwise_accuracy']:.3f} ({r['pairs']} pairs) "
                  + (f"inputs {r['input_level']['inputs']:+.3f} by-input-mean {r['input_level']['by_input_mean']:+.3f} "
                     f"(input-mean O {r['input_level']['input_mean_O']:+.3f}) " if r.get("input_level") else "")
                  + f"scored {r['scored']}/{r['items']} "
                  f"{r['cpu_s_per_item'] * 1000:.1f} ms/item" + (f" reasoning {json.dumps(r['reasoning'])}" if "reasoning" in r else ""))
        print(json.dumps(report["models"][model]["cost"]), "image dependence", round(report["models"][model]["image_dependence"], 4))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
