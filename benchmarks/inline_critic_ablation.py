"""The paper's ablation (Tab. 5) on ShapeEdit: backbone, LoRA, learnable token, single-stage and three-stage critic.

Run:  python benchmarks/inline_critic_ablation.py --seeds 0 1 --cases 108 --out runs/inline_critic-ablation
      python benchmarks/inline_critic_ablation.py --out runs/inline_critic-ablation --report   # table only

Every method starts from the same frozen bundled ShapeEdit editor and trains with
examples/configs/inline_critic/shapes.yaml (only `method`, `seed` and `output_dir` change), so the
numbers are the preset's, untuned. Budgets: the three-stage critic runs stage1/2/3 for
stage{1,2,3}.steps each; every baseline trains for stage3.steps with the stage-3 optimiser (the
paper's "single-stage = stage 3 only" comparison), so the generation loss is optimised for the
same number of steps by all trained methods, and stages 1-2 are extra (probe/critic-only) work.

Metrics on held-out data (never seen in training):
* val flow loss: rectified-flow loss on `data.validation_cases` pairs of the validation stream
  with fixed (t, noise) per pair: identical inputs for every method (lower is better).
* judge: `refine.shapes.judge.judge_edit` on a stratified shapes-bench subset (`--cases`, equal
  counts per category x phrasing), sampled with the editor's default steps and guidance, seed =
  case index: overall = sqrt(IF * CC), and IF, CC (higher is better).
Intervals: 95% bootstrap over cases (seeds pooled) and the per-seed means.
Results are appended to OUT/results.jsonl (one line per method and seed; reruns skip done ones).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from refine._compat import ensure_torchvision_importable

ensure_torchvision_importable()

PRESET = Path(__file__).resolve().parents[1] / "examples" / "configs" / "inline_critic" / "shapes.yaml"
METHODS = ["backbone", "lora", "learnable_token", "single_stage", "three_stage"]
LABELS = {
    "backbone": "ShapeEdit editor (frozen backbone)",
    "lora": "+ LoRA (r=8)",
    "learnable_token": "+ learnable token",
    "single_stage": "+ inline critic, single stage",
    "three_stage": "+ inline critic, 3-stage",
}


def bench_subset(cases: int):
    from refine.shapes.data import load_split

    bench = load_split("shapes-bench")
    strata: dict[tuple[str, str], list] = {}
    for case in bench:
        strata.setdefault((case.category, case.phrasing), []).append(case)
    per = max(1, cases // len(strata))
    return [case for group in strata.values() for case in group[:per]]


def judge_editor(editor, cases) -> list[dict[str, float]]:
    from refine.shapes.judge import judge_edit

    results = editor.edit([case.to_request(seed=i) for i, case in enumerate(cases)])
    rows = []
    for case, result in zip(cases, results):
        score = judge_edit(case.source_image, result.image, case)
        rows.append({"case": case.id, "overall": float(score.overall), "if": float(score.if_), "cc": float(score.cc)})
    return rows


def run_one(method: str, seed: int, out: Path, cases, overrides: list[str], editor_path: str | None = None) -> dict:
    from refine.backbones.shapes import load_shapes_backbone
    from refine.config import load_config
    from refine.inline_critic.config import InlineCriticConfig
    from refine.inline_critic.refiner import InlineCritic
    from refine.inline_critic.train import train_inline_critic
    from refine.rollout.flow_editor import FlowEditor

    started = time.perf_counter()
    backbone = load_shapes_backbone(editor_path)
    record: dict = {"method": method, "seed": seed}
    if method == "backbone":
        config = load_config(InlineCriticConfig, PRESET, [f"output_dir={out / 'backbone'}", "progress=false", *overrides])
        from refine.inline_critic.attach import attach_critic
        from refine.inline_critic.data import validation_pairs
        from refine.inline_critic.train import _freeze, validation_metrics

        _freeze(backbone)
        with attach_critic(backbone.transformer) as plain:
            record["val_flow_loss"] = validation_metrics(backbone, plain, None, validation_pairs(config.data), config,
                                                         seed=config.data.validation_seed)["val_flow_loss"]
        editor = FlowEditor(backbone)
    else:
        run_dir = out / f"{method}-seed{seed}"
        config = load_config(InlineCriticConfig, PRESET,
                             [f"method={method}", f"seed={seed}", f"output_dir={run_dir}", "progress=false", *overrides])
        summary = train_inline_critic(config, backbone=backbone)
        final = list(summary["stages"].values())[-1]
        record["val_flow_loss"] = final["val_flow_loss"]
        record["backbone_val_flow_loss"] = summary["backbone"]["val_flow_loss"]
        if method == "three_stage":
            record["stage2_critic_spearman"] = summary["stages"]["2"].get("val_critic_spearman")
            record["stage2_shuffled_spearman"] = summary["stages"]["2"].get("val_shuffled_spearman")
            record["stage3_critic_spearman"] = final.get("val_critic_spearman")
        record["train_seconds"] = round(time.perf_counter() - started, 1)
        editor = FlowEditor(backbone)  # LoRA: the adapters live in this backbone's transformer now
        if method != "lora":
            editor = InlineCritic(summary["weights"])(editor)
    rows = judge_editor(editor, cases)
    record["judge"] = rows
    record["seconds"] = round(time.perf_counter() - started, 1)
    return record


def _bootstrap(values, seed=0, resamples=2000):
    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = rng.choice(data, size=(resamples, data.size)).mean(axis=1)
    return float(data.mean()), *np.percentile(means, [2.5, 97.5])


def report(out: Path) -> str:
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    lines = [
        "| method | seeds | val flow loss (mean, per seed) | judge overall (mean [95% CI]) | per-seed overall | IF | CC |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in METHODS:
        mine = [r for r in records if r["method"] == method]
        if not mine:
            continue
        flow = [r["val_flow_loss"] for r in mine]
        overall = [row["overall"] for r in mine for row in r["judge"]]
        mean, low, high = _bootstrap(overall)
        per_seed = ", ".join(f"{np.mean([row['overall'] for row in r['judge']]):.4f}" for r in mine)
        if_ = np.mean([row["if"] for r in mine for row in r["judge"]])
        cc = np.mean([row["cc"] for r in mine for row in r["judge"]])
        seeds = ", ".join(str(r["seed"]) for r in mine) if method != "backbone" else "-"
        lines.append(
            f"| {LABELS[method]} | {seeds} | {np.mean(flow):.4f} ({', '.join(f'{f:.4f}' for f in flow)}) | "
            f"{mean:.4f} [{low:.4f}, {high:.4f}] | {per_seed} | {if_:.4f} | {cc:.4f} |"
        )
    extra = [r for r in records if r["method"] == "three_stage"]
    if extra:
        lines.append("")
        lines.append("Stage 2 (held-out, validation stream): Spearman of the critic's error map with the probes' = "
                     + ", ".join(f"{r['stage2_critic_spearman']:.3f}" for r in extra)
                     + "; shuffled-map control = " + ", ".join(f"{r['stage2_shuffled_spearman']:.3f}" for r in extra)
                     + " (one value per seed).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--cases", type=int, default=108, help="shapes-bench cases (stratified over category x phrasing)")
    parser.add_argument("--out", type=Path, default=Path("runs/inline_critic-ablation"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--editor", default=None, help="ShapeEdit editor folder (default: the bundled one)")
    parser.add_argument("--report", action="store_true", help="only print the table from OUT/results.jsonl")
    parser.add_argument("overrides", nargs="*", help="key=value overrides applied to the preset for every method")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    if not args.report:
        done = {(r["method"], r["seed"]) for r in map(json.loads, results.read_text().splitlines())} if results.is_file() else set()
        cases = bench_subset(args.cases)
        for seed in args.seeds:
            for method in args.methods:
                key = (method, seed if method != "backbone" else 0)
                if key in done or (method == "backbone" and seed != args.seeds[0]):
                    continue
                record = run_one(method, key[1], args.out, cases, args.overrides, args.editor)
                with results.open("a") as handle:
                    handle.write(json.dumps(record) + "\n")
                done.add(key)
                mean = np.mean([row["overall"] for row in record["judge"]])
                print(f"{method} seed {key[1]}: val flow {record['val_flow_loss']:.4f}, judge overall {mean:.4f} "
                      f"({record['seconds']} s)", flush=True)
    print(report(args.out))


if __name__ == "__main__":
    main()
