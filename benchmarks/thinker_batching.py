"""Per-turn batching of the Think-while-Edit loop against one request at a time: requests per second.

Run:

    python benchmarks/thinker_batching.py --requests 16 --turns 3

Both modes do exactly the same work: `--turns` edits and critiques per request (`early_stop=False`,
so no request finishes early), with the ShapeEdit editor (`FlowEditor`, all items of a call in one
transformer batch) and a thinker:

* batched: one `edit()` call with all requests; every turn sends all unfinished requests to the
  editor in one call and to the thinker in one call (what `ThinkWhileEdit` does);
* sequential: the same refined editor called once per request (what a user looping over
  requests, or a loop without per-turn batching, gets).

`--thinker expert` uses `ShapeExpertThinker` (cheap: the editor dominates); `--thinker tiny-vlm`
uses `VLMThinker` on the tiny random Qwen2.5-VL of `refine.testing.tiny_vlm` (batched generate;
it emits garbage, so `thinker_retries=0` and the loop would stop: we keep it going by measuring
the thinker calls separately). `--editor random` times an untrained editor of the bundled
architecture (same cost per step as the trained one), `bundled` the trained one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from _harness import load_shapes_editor  # benchmarks/_harness.py


def make_thinker(name: str, max_new_tokens: int):
    if name == "expert":
        from refine.thinker.shape_expert import ShapeExpertThinker

        return ShapeExpertThinker()
    from refine.rewards.backends.transformers_vlm import TransformersVLM
    from refine.testing.tiny_vlm import tiny_vlm_dir
    from refine.thinker.protocol import Thought
    from refine.thinker.vlm import VLMThinker

    inner = VLMThinker(TransformersVLM(tiny_vlm_dir("qwen2_5_vl"), batch_size=64), max_new_tokens=max_new_tokens)

    class KeepGoing:
        """The tiny VLM's replies are garbage; run it for its cost, then repeat the instruction."""

        name = inner.name

        def think(self, requests):
            inner.think(requests)
            return [Thought(r.previous_instruction + " again", "timing run", {"semantic": 0.0}) for r in requests]

    return KeepGoing()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--editor", default="random", help="'random' (same architecture, untrained), 'bundled' or a folder")
    parser.add_argument("--thinker", choices=["expert", "tiny-vlm"], default="expert")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="tiny-vlm thinker reply length")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: no spin-waiting on shared cores)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from refine.editor import compose
    from refine.shapes.data import load_split
    from refine.thinker.loop import ThinkWhileEdit

    torch.set_num_threads(args.threads)
    cases = [c for c in load_split("shapes-bench") if c.phrasing == "indirect"][: args.requests]
    requests = [case.to_request(seed=i) for i, case in enumerate(cases)]
    editor = load_shapes_editor(args.editor, batch_size=max(16, args.requests))
    refined = compose(editor, ThinkWhileEdit(make_thinker(args.thinker, args.max_new_tokens), max_turns=args.turns, early_stop=False))

    refined.edit(requests[:2])  # warm-up: lazy imports, allocator, template caches
    timings = {"batched": [], "sequential": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        batched = refined.edit(requests)
        timings["batched"].append(time.perf_counter() - start)
        start = time.perf_counter()
        sequential = [refined.edit([r])[0] for r in requests]
        timings["sequential"].append(time.perf_counter() - start)
    assert all(r.meta["thinker"]["editor_calls"] == args.turns for r in batched + sequential)

    seconds = {mode: statistics.median(values) for mode, values in timings.items()}
    rps = {mode: args.requests / s for mode, s in seconds.items()}
    result = {
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "seconds_median": seconds,
        "requests_per_second": rps,
        "speedup": rps["batched"] / rps["sequential"],
        "all_seconds": timings,
    }
    print(f"{args.requests} requests x {args.turns} turns, editor {args.editor}, thinker {args.thinker}, {args.threads} threads")
    print(f"batched per turn : {rps['batched']:.2f} requests/s ({seconds['batched']:.1f} s)")
    print(f"one at a time    : {rps['sequential']:.2f} requests/s ({seconds['sequential']:.1f} s)")
    print(f"speedup          : {result['speedup']:.2f}x")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
