#!/usr/bin/env bash
# The learned rewrite-only thinker on ShapeEdit, from nothing (issue 24), resumable: rerun after an interruption.
#
#   bash examples/shapes_rewrite_thinker.sh            # ~2 hours on 2 CPU cores; everything under runs/
#
# 1. the ShapeEdit VLM's seeing stage (supervised tower, then 1000 SFT steps reading the grid; ~12 min);
# 2. the rewrite stage (source image + indirect instruction -> the canonical direct phrasing of the
#    training stream; 6000 steps, ~55 min);
# 3. think-before-edit GRPO rows (4000 stream cases) and GRPO with R_edit, the rewrite's exact-judge gain
#    over the plain edit with the same seed (thinker_train/shapes-grpo-before; 200 steps, ~18 min);
# 4. a third stage, SFT on fresh cases (4000 steps, ~30 min): refine/assets/shapes-thinker;
# 5. the three thinkers in the loop on the 270 indirect shapes-val cases, 4 editor seeds per case.
# No step reads a case of shapes-val or shapes-bench; the exact judge reads training cases' ground truth
# as GRPO's reward only. Figures: benchmarks/RESULTS.md, "Think-before-edit GRPO" (issue 24, stop 41).
set -euo pipefail
export OMP_NUM_THREADS=2
GRPO_STEPS=${GRPO_STEPS:-200}

resume() { [ -d "$1/checkpoints" ] && echo --resume || true; }

[ -f runs/vlm-seeing-cells/final/config.json ] || \
  refine train vlm --config examples/configs/vlm/shapes-seeing-cells.yaml output_dir=runs/vlm-seeing-cells num_threads=2 \
    $(resume runs/vlm-seeing-cells)
[ -f runs/vlm-rw/final/config.json ] || \
  refine train vlm --config examples/configs/vlm/shapes-rewrite.yaml init_from=runs/vlm-seeing-cells/final output_dir=runs/vlm-rw \
    data.seed=41 data.cases=96000 'data.seeing_tasks={rewrite: 0.85, grid: 0.15}' max_steps=6000 warmup_steps=50 \
    save_steps=200 save_total_limit=5 learning_rate=1e-3 num_threads=2 $(resume runs/vlm-rw)
[ -d runs/thinker-first-turn/dataset ] || refine thinker first-turn --config thinker_data/shapes-first-turn
[ -f runs/thinker-grpo-before/final/config.json ] || \
  refine train thinker --config thinker_train/shapes-grpo-before --stage grpo max_steps="$GRPO_STEPS" \
    $(resume runs/thinker-grpo-before)
[ -f runs/vlm-rw2/final/config.json ] || \
  refine train vlm --config examples/configs/vlm/shapes-rewrite.yaml init_from=runs/vlm-rw/final output_dir=runs/vlm-rw2 \
    data.seed=42 data.cases=64000 'data.seeing_tasks={rewrite: 0.85, grid: 0.15}' max_steps=4000 warmup_steps=50 \
    save_steps=200 save_total_limit=3 learning_rate=5e-4 num_threads=2 $(resume runs/vlm-rw2)
for model in vlm-rw thinker-grpo-before vlm-rw2; do
  python benchmarks/thinker_learned.py --thinker "vlm:runs/$model/final" --prompt shapes-rewrite --min-confidence 0 \
    --seeds 4 --threads 2 --out "runs/$model-val.json"
done
