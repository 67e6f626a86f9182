"""Can a language model learn the ShapeEdit lookup from text? Trains one on the `lookup` drill, text only, and reports it.

    python benchmarks/lookup_capacity.py --init fresh --steps 1500 --out runs/capacity/fresh-h4kv2.json        # ~15 min
    python benchmarks/lookup_capacity.py --init fresh --names canonical --steps 1500 --out runs/capacity/fresh-canonical.json
    python benchmarks/lookup_capacity.py --init fresh --heads 8 --kv-heads 8 --steps 1500 --out runs/capacity/fresh-h8kv8.json
    python benchmarks/lookup_capacity.py --init refine/assets/shapes-thinker-scan --lr 5e-4 --layout chat-image --steps 750
    python benchmarks/lookup_capacity.py --init refine/assets/shapes-thinker-scan --lr 5e-4 --rewrite 0.7 --steps 1500
    python benchmarks/lookup_capacity.py --init fresh --names canonical --join adjacent --steps 8000 --eval-every 500 \
        --checkpoint runs/capacity/adjacent-long --out runs/capacity/adjacent-long.json [--resume]   # the long run, resumable
    python benchmarks/lookup_capacity.py --init fresh --fresh-init torch --lr 3e-4 --names canonical --steps 750   # stop 48
    python benchmarks/lookup_capacity.py --init refine/assets/shapes-thinker-scan --reinit-language --layout chat-image \
        --cells image --join adjacent --freeze-vision --names canonical --lr 3e-4 --steps 1500   # stop 49
    python benchmarks/lookup_capacity.py --init runs/capacity/adjacent5000-model --layout chat-image --cells image \
        --join keyed --freeze-vision --names canonical --lr 3e-4 --steps 1500 --checkpoint runs/capacity/keyed   # stop 50

Why (issue 24, stop 47): every rewrite the thinker gets wrong needs one step, finding a cell from what is in
it, and no format taught the VLM that step (stop 46: the `lookup` drill, trained through `refine train vlm`
with the image in the prompt, stayed at chance among the occupied cells for 4,000 steps). This script
separates the language model from everything else: the same drill rows (`tasks.lookup_example`: "Cells:
nothing in the top left corner; large red circle in the top middle; ...\\nWhere is each of these: the shape
with three sides; the red circle?" -> "the shape with three sides is in the middle left; the red circle is
in the top middle"), as plain text by default (no image, no chat template), through the thinker's own architecture
(`Qwen2_5_VLForConditionalGeneration`, the vision tower unused). It starts from a trained checkpoint
(`--init FOLDER`) or from fresh weights of the bundle's configuration with the text model's shape changed
(`--init fresh --hidden --heads --kv-heads --layers`; `--fresh-init torch`: PyTorch's initialisation and an
untied head instead of transformers', which `benchmarks/recall_init.py` finds decides whether recall is learnt), so a language model can be chosen by this measure
before a VLM is rebuilt around it (minutes per candidate, not hours).

Measured: the held-out drill (training-stream seed 777, never trained on). Each line's cell counts as right
when every one of its tokens is the argmax after the true prefix (greedy decoding of that line). The true
earlier lines are in that prefix, so a model that only knows which cells are occupied gets line k of n right
by elimination with chance 1 / (n - k); the first line, which nothing before it helps, measures the lookup
against chance 1 / n. Both are reported beside their chance, by object count and by the kind of name asked
(`--names canonical` asks every object by the words the cells give it: an exact-match copy, the lookup at
its simplest). `--cells image` drops the cells' text, so the lookup is from the name to the image (stop 49).
`first_line_shape_shared` is the first line's accuracy when another asked object has its shape, so only the
colour finds it (stop 50: the plateau near 0.70 was the shape alone); `--confusable P` draws a share P of rows of
that kind, `--ask-one` trains on the first object alone, and `--join keyed` writes a one-letter key for the name's
colour and shape between the name and its cell (`tasks.name_key`; a keyed line is right with its key and its cell). `--layout chat` / `chat-image` put the question in the chat template, without or after the
source image, as `refine train vlm` does. `--rewrite P` mixes in a share P of text-only rewrite rows
("Cells: ...\\nRewrite the instruction ... Instruction: <indirect>" -> the direct phrasing) and reports greedy
exactness on the indirect shapes-val cases with their true cells. Reads the answer key; a diagnostic, never
a thinker. Hand-written loop (AdamW, warm-up, linear decay): the rows are token ids, and the layouts are
built here so that one script can compare them.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refine._compat import ensure_torchvision_importable  # noqa: E402

ensure_torchvision_importable()  # transformers' processors import torchvision

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import torch  # noqa: E402
from rich.progress import track  # noqa: E402
from transformers import AutoConfig, AutoProcessor, Qwen2_5_VLForConditionalGeneration  # noqa: E402

from refine.shapes.data import load_split, stream_case  # noqa: E402
from refine.shapes.instructions import direct_ref  # noqa: E402
from refine.shapes.world import POSITION_NAMES  # noqa: E402
from refine.shapes.vlm.model import reinit_language_model, torch_default_init  # noqa: E402
from refine.shapes.vlm.tasks import QUESTIONS, SYSTEM_PROMPT, describe_cells, lookup_example, name_attributes, name_key  # noqa: E402
from refine.shapes.vlm.train import freeze_vision_parameters  # noqa: E402

BUNDLE = "refine/assets/shapes-thinker-scan"   # tokenizer, and the configuration fresh weights start from
HELD_OUT_SEED = 777                             # the drill's held-out stream; training uses --seed
NAME_KINDS = (("colour riddle", r"colour of"), ("shape riddle", r"shape with|shape like|round shape"),
              ("superlative", r"largest|biggest|smallest"), ("plain colour", r" object$"), ("plain shape", r"^the \w+$"))


def name_kind(name: str) -> str:
    """What kind of name a drill line asks by ("the red circle" is canonical, "the circle" plain)."""
    return next((kind for kind, pattern in NAME_KINDS if re.search(pattern, name)), "canonical")


def build_model(args):
    if args.init != "fresh":
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(args.init)
        if args.reinit_language:   # the checkpoint's vision tower, a language model with PyTorch's initialisation
            reinit_language_model(model)
        return model
    config = AutoConfig.from_pretrained(BUNDLE)
    text = config.text_config
    text.hidden_size, text.num_attention_heads, text.num_key_value_heads = args.hidden, args.heads, args.kv_heads
    text.num_hidden_layers, text.layer_types = args.layers, ["full_attention"] * args.layers
    text.intermediate_size = 4 * args.hidden
    # one rotary pair per section, interleaved over (t, h, w), as the bundle's model does for any head size
    text.rope_parameters["mrope_section"] = [1] * (args.hidden // args.heads // 2)
    if args.fresh_init == "torch":
        config.tie_word_embeddings = text.tie_word_embeddings = False
    torch.manual_seed(args.seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    if args.fresh_init == "torch":
        torch_default_init(model.model.language_model, model.lm_head)
    return model


def rewrite_text(scene, instruction: str) -> str:
    return f"Cells: {describe_cells(scene)}.\n" + QUESTIONS["rewrite"].format(instruction=instruction) + "\n"


@dataclass(frozen=True)
class DrillFormat:
    """How the drill's rows are worded. `canonical_only` (`--names canonical`): every object asked by its canonical
    name ("the red circle"), the words the cells give it, the lookup at its simplest, an exact-match copy.
    `adjacent` (`--join adjacent`): the cell right after the object's words, in the cells and in the answer
    ("large red circle top middle"), no filler between key and value. `cells_in_text=False` (`--cells image`): no
    "Cells: ..." line, so the cells are only in the image (with `--layout chat-image`): the lookup the thinker
    needs, from a name to the visual token that holds the object (stop 49)."""

    canonical_only: bool = False
    adjacent: bool = False
    cells_in_text: bool = True
    keyed: bool = False

    @property
    def join(self) -> str:
        return " " if self.adjacent else " is in the "

    def head(self, name: str) -> str:
        """A line up to its cell: the name, then (`keyed`, `--join keyed`) one character that stands for the name's
        colour and shape together, so the lookup's query is one token at hand ("the red circle K")."""
        return f"{name} {name_key(name)}" if self.keyed else name + self.join.rstrip()

    def answer(self, lines: list[tuple[str, str]]) -> str:
        """The completion for (name, cell) lines: "the red circle is in the top middle; ..."."""
        return "; ".join(f"{self.head(name)} {cell}" for name, cell in lines)


def shape_shared(lines: list[tuple[str, str]], k: int) -> bool:
    """Does another asked object have line k's shape (so the shape alone does not find it)?"""
    shape = name_attributes(lines[k][0])[1]
    return shape is not None and any(name_attributes(name)[1] == shape for j, (name, _) in enumerate(lines) if j != k)


def drill_row(seed: int, index: int, drill: DrillFormat):
    """(question, [(name, cell), ...] in the answer's order, source image) of the drill on stream case `index`;
    None for an empty scene."""
    case = stream_case(seed, index)
    example = lookup_example(case, random.Random(f"{seed}-{index}"))
    if example["task"] != "lookup":   # an empty scene: nothing to look up
        return None
    question, answer = example["prompt"][-1]["content"][-1]["text"], example["completion"][0]["content"][0]["text"]
    lines = [tuple(line.split(" is in the ")) for line in answer.split("; ")]
    if drill.canonical_only:
        cells = {name: position for position, name in POSITION_NAMES.items()}
        lines = [(direct_ref(case.source, cells[cell]), cell) for _, cell in lines]
        question = question.rsplit("\n", 1)[0] + "\n" + QUESTIONS["lookup"].rsplit("\n", 1)[1].format(names="; ".join(n for n, _ in lines))
    if drill.adjacent:   # the cells' words too: "large red circle top middle"
        question = question.replace(" in the ", drill.join)
    if not drill.cells_in_text:
        question = question.split("\n", 1)[1]
    return question + "\n", lines, example["images"][0]


class Layout:
    """How a (question, image) pair becomes the model's input: `text` (the question alone), `chat` (the chat
    template with the VLM rows' system prompt) or `chat-image` (that, with the source image before the
    question: the layout `refine train vlm` trains the drill in)."""

    def __init__(self, name: str, processor):
        self.name, self.processor, self.tokenizer = name, processor, processor.tokenizer

    def prompt(self, question: str, image) -> dict:
        """The prompt's `input_ids` (a list), plus `pixel_values` / `image_grid_thw` with an image."""
        if self.name == "text":
            return {"input_ids": self.tokenizer(question).input_ids}
        content = ([{"type": "image"}] if self.name == "chat-image" else []) + [{"type": "text", "text": question.rstrip()}]
        chat = [{"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]}, {"role": "user", "content": content}]
        text = self.processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        if self.name == "chat":
            return {"input_ids": self.tokenizer(text).input_ids}
        encoded = self.processor(text=[text], images=[image], return_tensors="pt")
        return {"input_ids": encoded.input_ids[0].tolist(), "pixel_values": encoded.pixel_values, "image_grid_thw": encoded.image_grid_thw}


def vision_inputs(prompts: list[dict]) -> dict:
    """The batch's image tensors (the processor's per-image patches, concatenated in row order)."""
    if "pixel_values" not in prompts[0]:
        return {}
    return {"pixel_values": torch.cat([p["pixel_values"] for p in prompts]), "image_grid_thw": torch.cat([p["image_grid_thw"] for p in prompts])}


def training_rows(args, drill: DrillFormat, cursor: dict):
    """The training rows from stream index `cursor["index"]` on; the cursor follows, so a resumed run reads on where it stopped."""
    while True:
        cursor["index"] += 1
        index = cursor["index"]
        if random.Random(f"mix-{args.seed}-{index}").random() < args.rewrite:
            case = stream_case(args.seed, index, indirect_fraction=0.8)
            yield rewrite_text(case.source, case.instruction), case.direct_instruction, case.source_image
        elif (row := drill_row(args.seed + 1000, index, drill)) is not None:
            question, lines, image = row
            if random.Random(f"confusable-{args.seed}-{index}").random() < args.confusable and not shape_shared(lines, 0):
                continue   # this row must be one whose first object the shape alone does not find
            if args.ask_one:   # only the first object is asked: the whole loss on the one lookup nothing else helps
                question, lines = question.replace(": " + "; ".join(n for n, _ in lines) + "?", f": {lines[0][0]}?"), lines[:1]
            yield question, drill.answer(lines), image


def batches(rows, layout: Layout, size: int):
    tokenizer = layout.tokenizer
    while True:
        prompts, encoded = [], []
        for question, answer, image in (next(rows) for _ in range(size)):
            prompts.append(layout.prompt(question, image))
            encoded.append((prompts[-1]["input_ids"], tokenizer(answer).input_ids + [tokenizer.eos_token_id]))
        length = max(len(q) + len(a) for q, a in encoded)
        ids = torch.zeros((size, length), dtype=torch.long)
        mask, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
        for k, (q, a) in enumerate(encoded):
            ids[k, :len(q) + len(a)] = torch.tensor(q + a)
            mask[k, :len(q) + len(a)] = 1
            labels[k, len(q):len(q) + len(a)] = torch.tensor(a)   # loss on the answer only
        yield {"input_ids": ids, "attention_mask": mask, "labels": labels, **vision_inputs(prompts)}


@torch.no_grad()
def drill_report(model, layout: Layout, drill: DrillFormat, cases: int) -> dict:
    """How often a held-out drill line names the right cell, against the chance of a model that only knows the occupied cells.

    Each line is scored after the true earlier lines (teacher forcing), so line k of n can be got right by
    elimination alone: a model that knows the occupied cells and never repeats one is right with chance
    1 / (n - k), not 1 / n (0.75 / 0.61 / 0.52 over all lines of 2 / 3 / 4 objects). So the first line, which
    nothing before it helps, is the measure of the lookup (`first_line`, chance 1 / n); `all_lines` is given
    beside its elimination chance.
    """
    model.eval()
    tokenizer = layout.tokenizer
    lines = []   # (objects, index of the line, its name's kind, right, shape shared)
    for index in range(cases):
        row = drill_row(HELD_OUT_SEED, index, drill)
        if row is None:
            continue
        question, asked, image = row
        prompt = layout.prompt(question, image)
        q = prompt["input_ids"]
        # each line's cell span, in answer tokens: tokenise the answer line by line to know where each cell starts
        ids, spans = [], []
        for k, (name, cell) in enumerate(asked):
            head = tokenizer(("; " if k else "") + drill.head(name)).input_ids
            tail = tokenizer(" " + cell).input_ids
            spans.append((len(q) + len(ids) + len(head), len(tail), name))
            ids += head + tail
        full = torch.tensor([q + ids])
        predicted = model(input_ids=full, **vision_inputs([prompt])).logits[0].argmax(-1)
        for k, (start, length, name) in enumerate(spans):
            right = bool((predicted[start - 1:start - 1 + length] == full[0, start:start + length]).all())
            if drill.keyed:   # the key is the model's own token too: a line is right with its key and its cell
                right = right and bool(predicted[start - 2] == full[0, start - 1])
            lines.append((len(spans), k, name_kind(name), right, shape_shared(asked, k)))
    model.train()

    def summary(rows) -> dict:
        return {"lines": len(rows), "right": round(sum(r[3] for r in rows) / max(len(rows), 1), 3),
                "chance": round(sum(1 / (r[0] - r[1]) for r in rows) / max(len(rows), 1), 3)}

    first = [r for r in lines if r[1] == 0]
    counts = sorted({r[0] for r in lines})
    return {"first_line": summary(first), "all_lines": summary(lines),
            "first_line_by_objects": {n: summary([r for r in first if r[0] == n]) for n in counts},
            "all_lines_by_objects": {n: summary([r for r in lines if r[0] == n]) for n in counts},
            "first_line_by_name": {kind: summary([r for r in first if r[2] == kind]) for kind in sorted({r[2] for r in first})},
            "first_line_shape_shared": summary([r for r in first if r[4]])}


@torch.no_grad()
def rewrite_report(model, tokenizer) -> dict:
    """Greedy exactness of the text-only rewrite on shapes-val's indirect cases, given their true cells."""
    model.eval()
    cases = [c for c in load_split("shapes-val") if c.phrasing == "indirect"]
    tokenizer.padding_side = "left"
    right = 0
    for start in range(0, len(cases), 32):
        chunk = cases[start:start + 32]
        encoded = tokenizer([rewrite_text(c.source, c.instruction) for c in chunk], return_tensors="pt", padding=True)
        out = model.generate(**encoded, max_new_tokens=40, do_sample=False)
        right += sum(tokenizer.decode(o, skip_special_tokens=True).strip() == c.direct_instruction
                     for c, o in zip(chunk, out[:, encoded.input_ids.shape[1]:]))
    tokenizer.padding_side = "right"
    model.train()
    return {"cases": len(cases), "exact": round(right / len(cases), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", default="fresh", help="fresh, or a VLM checkpoint folder to start from")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--fresh-init", choices=["transformers", "torch"], default="transformers",
                        help="fresh weights: transformers' N(0, 0.02) with tied embeddings, or PyTorch's defaults, untied (stop 48)")
    parser.add_argument("--reinit-language", action="store_true",
                        help="with --init FOLDER: keep its vision tower, untie the head and re-initialise the language model "
                             "with PyTorch's defaults (model.reinit_language_model, stop 49)")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--layout", choices=["text", "chat", "chat-image"], default="text",
                        help="the question alone, in the chat template, or in the chat template after the image (`Layout`)")
    parser.add_argument("--names", choices=["all", "canonical"], default="all",
                        help="ask each object by any of its names (the drill) or by its canonical name only (exact-match copy)")
    parser.add_argument("--join", choices=["is-in-the", "adjacent", "keyed"], default="is-in-the",
                        help="how a cell follows the object's words, in the cells and the answer: the drill's ' is in the ' / ' in the ', "
                             "or nothing between them (a textbook induction copy)")
    parser.add_argument("--cells", choices=["text", "image"], default="text",
                        help="the cells as a 'Cells: ...' line (the drill) or only in the image (needs --layout chat-image)")
    parser.add_argument("--freeze-vision", action="store_true",
                        help="train the language model only, the vision tower and merger frozen (as `refine train vlm` does)")
    parser.add_argument("--confusable", type=float, default=0.0,
                        help="share of drill rows whose first object shares its shape with another (its colour is needed); "
                             "the toy's second plateau was the shape alone (stop 50)")
    parser.add_argument("--ask-one", action="store_true",
                        help="train on the first object's lookup alone (the report still asks every object)")
    parser.add_argument("--rewrite", type=float, default=0.0, help="share of text-only rewrite rows mixed in (0: the drill alone)")
    parser.add_argument("--seed", type=int, default=60, help="training stream seed (the drill's rows use seed + 1000)")
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--eval-cases", type=int, default=300, help="held-out drill scenes per evaluation")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="folder for the run's state (weights, optimiser, schedule, data cursor, curve), written every "
                             "--eval-every steps; with --resume the run goes on from it")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--save", type=Path, default=None, help="save the trained model here")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.reinit_language and args.init == "fresh":
        parser.error("--reinit-language re-initialises a checkpoint's language model; fresh weights take --fresh-init torch")
    if args.fresh_init != "transformers" and args.init != "fresh":
        parser.error("--fresh-init applies to --init fresh only: a checkpoint keeps its own weights")
    torch.set_num_threads(args.threads)
    if args.rewrite > 0 and args.layout != "text":
        parser.error("--rewrite's report reads the rewrite as plain text; use it with --layout text")
    if args.cells == "image" and args.layout != "chat-image":
        parser.error("--cells image leaves the cells to the image: use it with --layout chat-image")
    if args.join == "keyed" and args.names != "canonical":
        parser.error("--join keyed writes a key for a name's colour and shape: use it with --names canonical")
    drill = DrillFormat(canonical_only=args.names == "canonical", adjacent=args.join in ("adjacent", "keyed"),
                        cells_in_text=args.cells == "text", keyed=args.join == "keyed")
    processor = AutoProcessor.from_pretrained(BUNDLE)
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "right"
    layout = Layout(args.layout, processor)
    model = build_model(args)
    model.train()
    if args.freeze_vision:
        freeze_vision_parameters(model, tower=True, merger=True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / args.warmup) * max(0.1, 1 - s / args.steps))
    cursor, curve, first = {"index": 0}, [], 1
    state_file = args.checkpoint / "state.pt" if args.checkpoint else None
    if args.resume:
        if state_file is None or not state_file.exists():
            raise SystemExit(f"--resume needs --checkpoint with a state.pt in it; found none at {state_file}")
        state = torch.load(state_file, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        cursor, curve, first = state["cursor"], state["curve"], state["step"] + 1
        print(f"resumed at step {state['step']} (stream index {cursor['index']})", flush=True)
    data = batches(training_rows(args, drill, cursor), layout, args.batch)
    started = time.time()
    for step in track(range(first, args.steps + 1), description="lookup drill"):
        loss = model(**next(data)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if step % args.eval_every == 0 or step == args.steps:
            point = {"step": step, "loss": round(loss.item(), 4), "seconds": round(time.time() - started),
                     **drill_report(model, layout, drill, args.eval_cases)}
            print(json.dumps({"step": step, "loss": point["loss"], "first_line": point["first_line"],
                              "first_line_by_objects": {n: (v["right"], v["chance"]) for n, v in point["first_line_by_objects"].items()},
                              "all_lines": point["all_lines"], "first_line_shape_shared": point["first_line_shape_shared"]}), flush=True)
            curve.append(point)
            if state_file is not None:   # written whole, then renamed: a run stopped mid-write keeps the last state
                args.checkpoint.mkdir(parents=True, exist_ok=True)
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                            "step": step, "cursor": cursor, "curve": curve}, state_file.with_suffix(".tmp"))
                state_file.with_suffix(".tmp").replace(state_file)
    report = {"args": {k: str(v) for k, v in vars(args).items()}, "curve": curve,
              "parameters": sum(p.numel() for p in model.model.language_model.parameters())}
    if args.rewrite > 0:
        report["rewrite_val"] = rewrite_report(model, tokenizer)
        print("rewrite on shapes-val (true cells):", report["rewrite_val"])
    if args.save:
        model.save_pretrained(args.save)
        processor.save_pretrained(args.save)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
