"""Peak memory of one Edit-R1 iteration: LoRA against full fine-tuning, on the same backbone.

Usage:
    python benchmarks/edit_r1_memory.py                              # the bundled ShapeEdit editor
    python benchmarks/edit_r1_memory.py --layers 8 --width 512      # a bigger random ShapeEdit-style editor
    python benchmarks/edit_r1_memory.py --config examples/configs/edit_r1/shapes.yaml rollout.group_size=8

Each mode runs in its own subprocess (peak counters are per process): load the backbone, note the
baseline, run one training iteration of the preset (rollout, reward, NFT update with its old-policy
and reference passes, optimizer step, EMA), and report the peak above the baseline. On CUDA the
peak is `torch.cuda.max_memory_allocated`; on CPU it is the resident set's high-water mark (VmHWM,
reset through /proc/self/clear_refs after loading, Linux only). What full fine-tuning adds: the
gradients and two AdamW moments of every transformer weight, plus the old-policy / EMA / reference
shadows (float32 copies of the trainable weights).

Output: a Markdown table on stdout and a JSON file (`--json`, default runs/bench_edit_r1_memory.json).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

PRESET = Path(__file__).resolve().parent.parent / "examples/configs/edit_r1/shapes.yaml"


def measure(mode: str, args: argparse.Namespace) -> dict:
    """Run one iteration with train.finetune=`mode` in this process; returns the peak figures."""
    import tempfile

    import torch

    from refine.config import load_config
    from refine.edit_r1.config import EditR1Config
    from refine.edit_r1.train import train

    torch.set_num_threads(args.threads)
    if args.layers or args.width:
        from refine.backbones.shapes import build_shapes_backbone

        backbone = build_shapes_backbone(layers=args.layers or 4, width=args.width or 128, heads=args.heads)
    else:
        from refine.backbones.shapes import load_shapes_backbone

        backbone = load_shapes_backbone()
    total = sum(p.numel() for p in backbone.transformer.parameters())
    overrides = [*args.overrides, f"train.finetune={mode}", "train.iterations=1", "eval.benchmark=null",
                 f"log.output_dir={tempfile.mkdtemp()}", "log.progress=false"]
    config = load_config(EditR1Config, args.config, overrides)
    cuda = torch.cuda.is_available()
    if cuda:
        backbone.to("cuda")
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset the resident high-water mark
        baseline = _status_kb("VmRSS") * 1024
    result = train(config, backbone=backbone)
    peak = torch.cuda.max_memory_allocated() if cuda else _status_kb("VmHWM") * 1024
    trainable = sum(p.numel() for p in backbone.transformer.parameters() if p.requires_grad)
    return {
        "mode": mode,
        "device": "cuda" if cuda else "cpu",
        "transformer_parameters": total,
        "trainable_parameters": trainable,
        "baseline_mib": baseline / 2**20,
        "peak_mib": peak / 2**20,
        "peak_above_baseline_mib": (peak - baseline) / 2**20,
        "seconds_update": result.metrics[-1]["seconds_update"],
    }


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}; this CPU measurement needs Linux")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(PRESET))
    parser.add_argument("--layers", type=int, default=None, help="build a random editor with this many MM-DiT blocks")
    parser.add_argument("--width", type=int, default=None, help="... and this width")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default="runs/bench_edit_r1_memory.json")
    parser.add_argument("--mode", choices=["lora", "full"], default=None, help=argparse.SUPPRESS)  # child process
    parser.add_argument("overrides", nargs="*", help="key.sub=value config overrides")
    args = parser.parse_args()

    if args.mode:  # child: measure one mode, print JSON
        print("RESULT " + json.dumps(measure(args.mode, args)))
        return
    rows = []
    for mode in ("lora", "full"):
        command = [sys.executable, __file__, "--mode", mode, "--config", args.config, "--threads", str(args.threads),
                   "--heads", str(args.heads), *(["--layers", str(args.layers)] if args.layers else []),
                   *(["--width", str(args.width)] if args.width else []), *args.overrides]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(json.loads(next(l for l in done.stdout.splitlines() if l.startswith("RESULT "))[7:]))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    print("| mode | trainable params | peak above baseline (MiB) | peak (MiB) | update (s) |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['mode']} | {row['trainable_parameters']:,} / {row['transformer_parameters']:,} | "
              f"{row['peak_above_baseline_mib']:.1f} | {row['peak_mib']:.1f} | {row['seconds_update']:.2f} |")
    lora, full = rows
    print(f"\nfull / LoRA peak above baseline: {full['peak_above_baseline_mib'] / max(lora['peak_above_baseline_mib'], 1e-9):.2f}x "
          f"({lora['device']}); JSON: {args.json}")


if __name__ == "__main__":
    main()
