"""What the ShapeEdit VLM is trained on: seeing tasks (describe, what is where, colours, differences) and judge tasks.

Example:
    >>> from refine.shapes import load_split
    >>> from refine.shapes.vlm.tasks import seeing_examples
    >>> import random
    >>> case = load_split("shapes-val")[0]          # (a doctest only: training data come from the stream)
    >>> example = seeing_examples(case, random.Random(0), per_case=1)[0]
    >>> sorted(example), example["prompt"][-1]["role"], example["completion"][0]["role"]
    (['case_id', 'completion', 'images', 'overall', 'prompt', 'task'], 'user', 'assistant')

Every example is one row of a TRL conversational prompt-completion dataset with images: `prompt`
(system + user messages whose image parts are placeholders `{"type": "image"}`), `completion`
(one assistant message), `images` (PIL images, in placeholder order) and `task` (its name, for
logs), `overall` (the exact judge's O of a judge example's output, else None) and `case_id`
(the stream case it came from). TRL's collator puts the images into the placeholders, renders the chat template and puts
the loss on the completion only.

Judge examples are the exact conversation `refine.rewards.mllm.MLLMJudge` sends in each mode (built
by its own `user_text` and `conversation`, so the prompts cannot drift), answered from the exact
judge's O = sqrt(IF x CC) of that output:

| mode | completion |
|---|---|
| score (`score_logit`, `score_sample`) | ``"Score": [[n]]``, n = 5 O rounded stochastically (E[n] = 5 O, so the model's expected score estimates O) |
| yesno (`yesno_logit`, `yesno_sample`) | ``"Judgement": [[Yes]]`` if O >= `YES_THRESHOLD`, else No |
| score_cot (the `_cot` modes) | ``"Reasoning": "<the judge's failed checks>",`` then the score line |
| score_read (the `_cot` modes) | ``"Reasoning": "<named objects found>. edit: <direct phrasing>. <each change, and each failed keep: cell, was -> should be, found, verdict>",`` then the score line (`read_reasoning`) |
| score_walk (the `_cot` modes) | the same over the background and all nine cells in reading order (`read_reasoning(every_cell=True)`) |
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
from typing import Any, Callable, Sequence

from PIL import Image

from refine.errors import InputError
from refine.rewards.backends.base import ProbResult
from refine.rewards.mllm import MLLMJudge
from refine.shapes.data import ShapeCase
from refine.shapes.degrade import degrade
from refine.shapes.edits import apply_edit, random_edit
from refine.shapes.judge import Check, JudgeScore, ParsedScene, judge_edit, parse_image
from refine.shapes.instructions import RELATIONS, STEPS, direct_ref, object_names, related
from refine.shapes.world import COLOR_NAMES, GRID, POSITION_NAMES, POSITIONS, SHAPES, Obj, Scene, render

SYSTEM_PROMPT = "You are a helpful assistant."
QUESTIONS: dict[str, str] = {
    "describe": "Describe the scene.",
    "at_position": "What is in the {position}?",
    "color": "What colour is the object in the {position}?",
    "background": "What colour is the background?",
    "count": "How many objects are there?",
    "difference": "Here are two images. What differs between them?",
    "grid": "What is in each cell?",
    "where": "Where is {name}?",
    "beside": "Which cell is directly {relation} {name}?",
    "pair_at": "Here are two images. What is in the {position} of the {which} image?",
    "not_in": "Here are two images. What is in the {which} image that is not in the {other} image?",
    "lookup": "Cells: {cells}.\nWhere is each of these: {names}?",
    "find": "Where is each of these: {names}?",
    "rewrite": "Rewrite the instruction so that an image editor can follow it directly.\nInstruction: {instruction}",
    "rewrite_think": "Describe the image in <think></think>, then rewrite the instruction so that an image editor can follow it "
                     "directly in <answer></answer>.\nInstruction: {instruction}",
    "rewrite_grid": "What is in each cell? Answer in <think></think>, then rewrite the instruction so that an image editor can "
                    "follow it directly in <answer></answer>.\nInstruction: {instruction}",
    "rewrite_scan": "Find the objects the instruction names, cell by cell, in <think></think>, then rewrite the instruction so "
                    "that an image editor can follow it directly in <answer></answer>.\nInstruction: {instruction}",
    "rewrite_scan_read": "Find the objects the instruction names, reading cell by cell, in <think></think>, then rewrite the "
                         "instruction so that an image editor can follow it directly in <answer></answer>.\nInstruction: {instruction}",
    "rewrite_lookup": "Say what is in each cell, then where each object the instruction names is, in <think></think>, then "
                      "rewrite the instruction so that an image editor can follow it directly in <answer></answer>.\n"
                      "Instruction: {instruction}",
    "rewrite_locate": "Say what is in each cell and where the objects the instruction names are in <think></think>, then "
                      "rewrite the instruction so that an image editor can follow it directly in <answer></answer>.\n"
                      "Instruction: {instruction}",
    "rewrite_find": "Find each object the instruction names in the image, in <think></think>, then rewrite the instruction "
                    "so that an image editor can follow it directly in <answer></answer>.\nInstruction: {instruction}",
}
# The tasks drawn uniformly when no weights are given (the presets' datasets): "grid" is opt-in.
DEFAULT_SEEING_TASKS: tuple[str, ...] = ("describe", "at_position", "color", "background", "count", "difference")
# O at or above which the yes/no label is "Yes" (the exact judge's success needs IF = 1).
YES_THRESHOLD = 0.75
SCORE_HIGH = 5  # the rewards layer's default scale is 0-5 (`MLLMJudge(score_range=(0, 5))`)
# Each judge kind and the mode whose prompt it answers: score_read / score_walk ask the CoT prompt too (the `_cot`
# modes send it), answered with `read_reasoning` before the score
_KIND_MODE = {"score": "score_logit", "yesno": "yesno_logit", "score_cot": "score_sample_cot", "score_read": "score_sample_cot",
              "score_walk": "score_sample_cot"}
JUDGE_KINDS = tuple(_KIND_MODE)


def describe_scene(scene: Scene) -> str:
    """The answer to "Describe the scene.": background, then each object in reading order.

    >>> from refine.shapes.world import Obj
    >>> describe_scene(Scene("white", (Obj("circle", "red", "large", (1, 1)),)))
    'white background: large red circle in the center'
    """
    return scene.describe()


def describe_difference(before: Scene, after: Scene) -> str:
    """Cell by cell what changed from `before` to `after` ("nothing" when the scenes are equal).

    >>> from refine.shapes.world import Obj
    >>> a = Scene("white", (Obj("circle", "red", "large", (0, 0)),))
    >>> describe_difference(a, Scene("black", (Obj("circle", "blue", "large", (0, 0)),)))
    'background: white -> black; top left corner: large red circle -> large blue circle'
    """
    parts = [f"background: {before.background} -> {after.background}"] if before.background != after.background else []
    for position in POSITIONS:
        was, now = before.at(position), after.at(position)
        if was != now:
            parts.append(f"{POSITION_NAMES[position]}: {_name(was)} -> {_name(now)}")
    return "; ".join(parts) or "nothing"


def describe_grid(scene: Scene) -> str:
    """The answer to "What is in each cell?": all nine cells in reading order, empty ones as "nothing".

    Every cell is asked in every example (a describe answer names only the occupied ones, and the
    at-position question one cell, mostly an empty one), so the answer's tokens supervise what the
    vision tokens must carry about each cell.

    >>> from refine.shapes.world import Obj
    >>> describe_grid(Scene("white", (Obj("circle", "red", "large", (0, 1)),))).split("; ")[:3]
    ['top left corner: nothing', 'top middle: large red circle', 'top right corner: nothing']
    """
    return "; ".join(f"{POSITION_NAMES[position]}: {_name(scene.at(position))}" for position in POSITIONS)


def describe_parsed_grid(parsed: ParsedScene) -> str:
    """The grid answer for an image read by the exact parser: every cell, with its stray marks.

    An editor's output is not a clean render: a cell may hold an object "with stray marks" or
    "unrecognisable marks", and the exact judge's partial credit turns on exactly that, so these
    answers teach the language model to read it from the visual tokens.

    >>> from refine.shapes.degrade import noise_image
    >>> describe_parsed_grid(parse_image(noise_image(32, seed=0))).split("; ")[0]
    'top left corner: unrecognisable marks'
    """
    # the parser's own wording without an article (`CellFit.name`), as `_name` names objects
    return "; ".join(f"{POSITION_NAMES[cell.position]}: {cell.name}" for cell in parsed.cells)


def output_grid_example(case: ShapeCase, output: Image.Image) -> dict[str, Any]:
    """"What is in each cell?" about an editor's `output`, answered with what the exact parser reads there."""
    return _example(case, "grid_output", [output], QUESTIONS["grid"], describe_parsed_grid(parse_image(output)))


def _name(obj) -> str:
    return "nothing" if obj is None else f"{obj.size} {obj.color} {obj.shape}"


def _example(case: ShapeCase, task: str, images: Sequence[Image.Image], user_text: str, answer: str,
             system: str | None = SYSTEM_PROMPT) -> dict[str, Any]:
    prompt = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
    content = [{"type": "image", "text": None} for _ in images] + [{"type": "text", "text": user_text}]
    prompt.append({"role": "user", "content": content})
    return {"task": task, "prompt": prompt, "completion": [{"role": "assistant", "content": [{"type": "text", "text": answer}]}],
            "images": list(images), "overall": None, "case_id": case.id}


def seeing_examples(case: ShapeCase, rng: random.Random, per_case: int = 3, tasks: dict[str, float] | None = None,
                    degrade_rate: float = 0.3) -> list[dict[str, Any]]:
    """`per_case` image-understanding examples about the case's source or target (a share `degrade_rate` degraded).

    `tasks` weights the task kinds (keys of `QUESTIONS`); None draws the `DEFAULT_SEEING_TASKS` uniformly.
    """
    unknown = set(tasks or ()) - set(QUESTIONS)
    if unknown:
        raise InputError(f"unknown seeing tasks {sorted(unknown)}; use {', '.join(QUESTIONS)}")
    out = []
    for _ in range(per_case):
        scene = rng.choice((case.source, case.target))
        image = render(scene, case.size)
        if rng.random() < degrade_rate:  # editors' outputs are blurred and noisy: see through it
            image = degrade(image, noise=rng.uniform(0, 12) / 255, blur=rng.choice((0.0, 0.6, 1.0)), seed=rng.randrange(1 << 30))
        # (uniform draw by `choice` when unweighted, so the presets' datasets stay the same row for row)
        task = rng.choice(DEFAULT_SEEING_TASKS) if tasks is None else rng.choices(list(tasks), list(tasks.values()))[0]
        position = rng.choice(POSITIONS)
        if task == "grid":
            out.append(_example(case, task, [image], QUESTIONS[task], describe_grid(scene)))
        elif task == "rewrite":
            out.append(rewrite_example(case))
        elif task in REWRITE_REASONING:
            out.append(reasoned_example(case, task))
        elif task == "pair_at":
            out.append(_pair_at_example(case, rng))
        elif task == "not_in":
            out.append(_not_in_example(case, rng))
        elif task in ("lookup", "find"):
            out.append(lookup_example(case, rng, scene, cells_in_text=task == "lookup"))
        elif task == "describe":
            out.append(_example(case, task, [image], QUESTIONS[task], describe_scene(scene)))
        elif task == "at_position":
            obj = scene.at(position)
            out.append(_example(case, task, [image], QUESTIONS[task].format(position=POSITION_NAMES[position]), _name(obj)))
        elif task in ("where", "beside"):
            out.append(_locate_example(case, task, scene, image, rng))
        elif task == "color":
            if scene.objects:
                position = rng.choice(scene.objects).position
            obj = scene.at(position)
            answer = obj.color if obj is not None else "there is no object there"
            out.append(_example(case, task, [image], QUESTIONS[task].format(position=POSITION_NAMES[position]), answer))
        elif task == "background":
            out.append(_example(case, task, [image], QUESTIONS[task], scene.background))
        elif task == "count":
            out.append(_example(case, task, [image], QUESTIONS[task], str(len(scene.objects))))
        else:
            before, after = (case.source, case.target) if rng.random() < 0.8 else (case.source, case.source)
            images = [render(before, case.size), render(after, case.size)]
            out.append(_example(case, task, images, QUESTIONS[task], describe_difference(before, after)))
    return out


def _locate_example(case: ShapeCase, task: str, scene: Scene, image: Image.Image, rng: random.Random) -> dict[str, Any]:
    """A cell named from an object: "Where is the red circle?" -> "middle right" (`where`), or the cell next to it,
    "Which cell is directly above the red circle?" -> "top right corner" (`beside`).

    The rewrite must go both ways between a cell's name and what is there: "the object in the middle
    right" (name -> object, `at_position`) and "directly above the green triangle" or "one cell up"
    (object -> the name of a cell). The bundled rewrite model got the first right on half the val
    and bench cases and the second on a fifth (benchmarks/RESULTS.md, stop 44); these questions ask
    each step alone. Objects are named as the direct phrasing names them without a cell (a name with
    "in the ..." would give the answer away); a scene with no such object is asked `grid` instead.
    """
    named = [(o, direct_ref(scene, o.position)) for o in scene.objects]
    named = [(o, name) for o, name in named if " in the " not in name]
    if task == "beside":
        named = [(o, name, d) for o, name in named for d, (dr, dc) in STEPS.items()
                 if 0 <= o.position[0] + dr < GRID and 0 <= o.position[1] + dc < GRID]
    if not named:
        return _example(case, "grid", [image], QUESTIONS["grid"], describe_grid(scene))
    if task == "where":
        obj, name = rng.choice(named)
        return _example(case, task, [image], QUESTIONS[task].format(name=name), POSITION_NAMES[obj.position])
    obj, name, direction = rng.choice(named)
    cell = (obj.position[0] + STEPS[direction][0], obj.position[1] + STEPS[direction][1])
    question = QUESTIONS[task].format(relation=RELATIONS[direction], name=name)
    return _example(case, task, [image], question, POSITION_NAMES[cell])


def name_attributes(name: str) -> tuple[str | None, str | None]:
    """The colour and the shape a name says, None for what it does not say.

    >>> name_attributes("the large red circle"), name_attributes("the shape with three sides")
    (('red', 'circle'), (None, None))
    """
    words = name.split()
    return next((w for w in words if w in COLOR_NAMES), None), next((w for w in words if w in SHAPES), None)


def name_key(name: str) -> str | None:
    """One letter for the colour and shape a name says together ("the red circle" -> "A"), None if it lacks either.

    Why (stop 50): the lookup from a name to its cell is learnt when the answer's query is one token at hand
    (stop 49); a two-word name leaves the colour one token back, and the model then finds the object by its
    shape alone (right when the shape is unique, at chance when another object shares it). Written after the
    name, the key is predicted from the two words (supervised, text only) and the cell is looked up from it.
    32 (colour, shape) pairs: "A"-"Z", then "a"-"f".

    >>> name_key("the red circle"), name_key("the large white diamond"), name_key("the shape with three sides")
    ('A', 'b', None)
    """
    colour, shape = name_attributes(name)
    if colour is None or shape is None:
        return None
    index = COLOR_NAMES.index(colour) * len(SHAPES) + SHAPES.index(shape)
    return chr(ord("A") + index) if index < 26 else chr(ord("a") + index - 26)


def found_line(name: str, cell: str) -> str:
    """A name, its key when it has one (`name_key`), then its cell: `find` and `rewrite_find`'s lines.

    >>> found_line("the red circle", "top middle"), found_line("the shape with three sides", "center")
    ('the red circle A top middle', 'the shape with three sides center')
    """
    key = name_key(name)
    return f"{name} {key} {cell}" if key else f"{name} {cell}"


def lookup_names(scene: Scene) -> list[tuple[str, Obj]]:
    """(name, object) for each name of each object that says what the object is, not where: canonical, plain ("the
    circle"), riddles ("the shape with three sides", "the object the colour of a pumpkin"), superlatives. Names
    with a cell or a relation to another object are left out: they give the cell away or need two lookups."""
    return [(name, obj) for obj in scene.objects for name in object_names(scene, obj.position)
            if " in the " not in name and not any(f" {relation} " in name for relation in RELATIONS.values())]


def lookup_example(case: ShapeCase, rng: random.Random, scene: Scene | None = None, cells_in_text: bool = True) -> dict[str, Any]:
    """The lookup drill: every cell given as text, then "where is each of these" objects named by what they are.

    Opt-in (`seeing_tasks: {lookup: ...}`). Why (stop 46): every rewrite that needs the scene needs
    one step, finding a cell from what is in it ("the shape with three sides", "directly above the green
    triangle"), and the model has never learnt it: not from the image (`where`: chance among the
    occupied cells), not from cells it wrote itself (`rewrite_locate`), not cell by cell
    (`rewrite_scan_read` stops at the named object a third of the time), not even for riddles (on val
    most wrong riddle rewrites name another object). In those formats the lookup was a few tokens of a
    long answer. Here the cells are in the prompt (`describe_cells`: content, then cell, the order a
    language model copies from) and the whole completion is lookups, one per object in random order,
    each by one of its names at random, in `rewrite_locate`'s words: "the shape with three sides is in the middle
    left; the red circle is in the top right corner". The source image is attached too, so the row is like every
    other one. Stream cases only.

    `cells_in_text=False` is the `find` task: no cells in the prompt, so each object is found in the image, and
    each cell right after its name and its key (`found_line`: "the red circle A top right corner"): the layout in
    which that lookup is learnt at all (stop 49, `benchmarks/lookup_capacity.py --cells image --join adjacent`;
    the key, stop 50, `--join keyed`), and `rewrite_find`'s.

    >>> from refine.shapes.data import stream_case
    >>> example = lookup_example(stream_case(41, 0), random.Random(0))
    >>> example["prompt"][-1]["content"][-1]["text"].startswith("Cells: nothing in the top left corner; ")
    True
    >>> found = lookup_example(stream_case(41, 0), random.Random(0), cells_in_text=False)
    >>> found["task"], found["prompt"][-1]["content"][-1]["text"].startswith("Where is each of these: ")
    ('find', True)
    """
    scene = case.source if scene is None else scene
    image = render(scene, case.size)
    names: dict[Obj, list[str]] = {}   # objects are frozen and each holds its own cell, so they key by value
    for name, obj in lookup_names(scene):
        names.setdefault(obj, []).append(name)
    if not names:
        return _example(case, "grid", [image], QUESTIONS["grid"], describe_grid(scene))
    objects = [obj for obj in scene.objects if obj in names]
    rng.shuffle(objects)
    asked = [(rng.choice(names[obj]), obj) for obj in objects]
    names_text = "; ".join(name for name, _ in asked)
    if not cells_in_text:
        answer = "; ".join(found_line(name, POSITION_NAMES[obj.position]) for name, obj in asked)
        return _example(case, "find", [image], QUESTIONS["find"].format(names=names_text), answer)
    question = QUESTIONS["lookup"].format(cells=describe_cells(scene), names=names_text)
    answer = "; ".join(f"{name} is in the {POSITION_NAMES[obj.position]}" for name, obj in asked)
    return _example(case, "lookup", [image], question, answer)


def rewrite_example(case: ShapeCase) -> dict[str, Any]:
    """(source image, the case's instruction) -> its canonical direct phrasing: EditThinker's rewrite, alone.

    Opt-in (`seeing_tasks: {rewrite: ...}`). The thinker's job on ShapeEdit is mostly this: resolve
    riddles ("the colour of the sky"), superlatives and relations ("the object left of the blue
    square") against the source image and name the edit the way the editor was trained to read it.
    A thinker fine-tuned on a few thousand expert trajectories wrote the format but not this
    (benchmarks/RESULTS.md, "EditThinker trained from the ShapeEdit VLM"); the training stream has it
    without limit. Stream cases only, so no split's answer is ever a label.

    >>> from refine.shapes.data import stream_case
    >>> example = rewrite_example(stream_case(41, 0, indirect_fraction=1.0))
    >>> example["task"], len(example["images"]), example["prompt"][-1]["content"][-1]["text"].startswith("Rewrite")
    ('rewrite', 1, True)
    """
    question = QUESTIONS["rewrite"].format(instruction=case.instruction)
    return _example(case, "rewrite", [case.source_image], question, case.direct_instruction)


def reasoned_example(case: ShapeCase, task: str) -> dict[str, Any]:
    """`task`'s question about the source, answered in EditThinker's tags: `<think>` its reasoning
    (`REWRITE_REASONING[task]`) `</think><answer>` the direct phrasing `</answer>`."""
    question = QUESTIONS[task].format(instruction=case.instruction)
    answer = f"<think>{REWRITE_REASONING[task](case)}</think><answer>{case.direct_instruction}</answer>"
    return _example(case, task, [case.source_image], question, answer)


def rewrite_think_example(case: ShapeCase) -> dict[str, Any]:
    """The rewrite with its reasoning first, in EditThinker's tags: `<think>` the source scene `</think><answer>` the rewrite.

    Opt-in (`seeing_tasks: {rewrite_think: ...}`). The plain rewrite's errors on add and move are
    spatial (issue 24, stop 39): "directly left of the blue circle" needs the circle's cell, then the
    cell beside it, and a 4-layer model asked for the answer at once often names the wrong cell.
    (Over all categories its errors are in resolving the instruction, not in seeing: stop 40, `rewrite_grid`.) Writing the scene
    first (the `describe` task's answer) puts every cell in the text the answer is read from, and
    gives the thinker's think-before-edit reply the paper's <think>/<answer> format. Tried once
    (examples/configs/vlm/shapes-rewrite-think.yaml, stop 39): after 1,000 steps from the plain
    rewrite model, 41% of shapes-val rewrites were exact against its 72%, and the scenes it wrote
    were often wrong, so the reasoning carried the seeing errors into the answer; stopped there
    (benchmarks/RESULTS.md). Stream cases only.

    >>> from refine.shapes.data import stream_case
    >>> example = rewrite_think_example(stream_case(41, 0, indirect_fraction=1.0))
    >>> text = example["completion"][0]["content"][0]["text"]
    >>> text.startswith("<think>") and "</think><answer>" in text and text.endswith("</answer>")
    True
    """
    return reasoned_example(case, "rewrite_think")


def rewrite_grid_example(case: ShapeCase) -> dict[str, Any]:
    """The rewrite with the source's grid first: `<think>` every cell `</think><answer>` the rewrite `</answer>`.

    Opt-in (`seeing_tasks: {rewrite_grid: ...}`). Why: the plain rewrite model reads the source's grid
    right (the `grid` question) in 258 of 270 shapes-val scenes, yet 66 of its 73 wrong rewrites are on
    scenes it reads right (stop 40): its errors are in resolving the instruction against what it saw
    ("directly left of the blue circle" needs that circle's cell, then the one beside it), not in
    seeing. Writing the grid first, in the format it already reads best, puts every cell in the text
    the answer is then read from. `rewrite_think` wrote `describe`'s scene instead, a format the model
    had learnt less well, and its scenes came out wrong. Tried once (examples/configs/vlm/shapes-rewrite-grid.yaml,
    stop 40): from the plain rewrite model, 62% of 90 shapes-val rewrites exact after 1,000 steps and
    63% after 1,600 (hybrids 10%), against its 73%; stopped there (benchmarks/RESULTS.md). Stream cases only.

    >>> from refine.shapes.data import stream_case
    >>> example = rewrite_grid_example(stream_case(41, 0, indirect_fraction=1.0))
    >>> text = example["completion"][0]["content"][0]["text"]
    >>> text.startswith("<think>top left corner: ") and text.endswith("</answer>")
    True
    """
    return reasoned_example(case, "rewrite_grid")


def _named_objects(scene: Scene, instruction: str) -> list[tuple[str, Obj]]:
    """(name, object) for each object `instruction` names by its canonical name without a cell, in the order it names them."""
    named = [(instruction.find(name), name, obj) for obj in scene.objects
             for name in [direct_ref(scene, obj.position)] if " in the " not in name and name in instruction]
    return [(name, obj) for _, name, obj in sorted(named, key=lambda n: n[0])]


def locate_named(scene: Scene, instruction: str) -> str:
    """The cells of the objects `instruction` names without a cell, in the order it names them.

    >>> from refine.shapes.world import Obj
    >>> scene = Scene("white", (Obj("circle", "red", "large", (1, 2)), Obj("triangle", "green", "small", (0, 0))))
    >>> locate_named(scene, "add a blue square directly above the red circle")
    'the red circle is in the middle right'
    """
    return "; ".join(f"{name} is in the {POSITION_NAMES[obj.position]}" for name, obj in _named_objects(scene, instruction))


def describe_cells(scene: Scene) -> str:
    """All nine cells in reading order, each as what is there, then where: "large red circle in the top middle".

    The `grid` answer's facts with the cell after its content, so a later token that names an
    object finds its cell in the tokens that follow that object in the text (the way a language
    model copies: a match, then what came after it). The grid's "top middle: large red circle"
    puts the cell before the object, and a rewrite reading it resolved 9% of "directly beside"
    references (stop 44).

    >>> from refine.shapes.world import Obj
    >>> describe_cells(Scene("white", (Obj("circle", "red", "large", (0, 1)),))).split("; ")[:2]
    ['nothing in the top left corner', 'large red circle in the top middle']
    """
    return "; ".join(f"{_name(scene.at(position))} in the {POSITION_NAMES[position]}" for position in POSITIONS)


def rewrite_locate_example(case: ShapeCase) -> dict[str, Any]:
    """The rewrite after two short steps of reasoning: every cell (content, then place), then the cell of each object the instruction names.

    Opt-in (`seeing_tasks: {rewrite_locate: ...}`). Why (stop 45): asked "Where is the red circle?",
    the rewrite model answers an occupied cell at random (right in 98% of one-object scenes, 42% with
    two objects, 24% with four) after 1,500 steps of that question alone: its language model reads a
    cell's content by where the cell is, but not a cell by what is in it. The rewrites that carry the
    thinker's gain need exactly that ("directly above the green triangle": +0.34 when right, right 25%).
    Here the image is read the way the model reads it well (cell by cell, `describe_cells`), the named
    objects are then found in that text (`locate_named`: "the green triangle is in the middle right"),
    and the rewrite reads the cell from there. Tried once (examples/configs/vlm/shapes-rewrite-locate.yaml,
    stop 45): after 1,000 steps the cells were written exactly in 96% of val scenes, but 4 of 21
    "X is in the Y" lines were right; stopped (benchmarks/RESULTS.md, "Finding a named object"). Stream cases only.

    >>> from refine.shapes.data import stream_case
    >>> example = rewrite_locate_example(stream_case(41, 0, indirect_fraction=1.0))
    >>> text = example["completion"][0]["content"][0]["text"]
    >>> text.startswith("<think>") and " in the top left corner; " in text and text.endswith("</answer>")
    True
    """
    return reasoned_example(case, "rewrite_locate")


def _scan(scene: Scene, target: Obj, read: bool) -> str:
    """The cells in reading order up to `target`'s: each "no" until "match", or (`read`) each with what is there, as the
    grid says it ("top middle: large black square"), and "match" after the target's."""
    cells = POSITIONS[:POSITIONS.index(target.position) + 1]
    if read:
        return ", ".join(f"{POSITION_NAMES[c]}: {_name(scene.at(c))}" for c in cells) + " match"
    return ", ".join(f"{POSITION_NAMES[c]} {'match' if c == target.position else 'no'}" for c in cells)


def _beside_lines(scene: Scene, instruction: str, name: str, obj: Obj) -> list[str]:
    """What the instruction's "directly above X" / "the object above X" point at, X = `name` (the object `obj`)."""
    lines = []
    for direction, (dr, dc) in STEPS.items():
        cell = (obj.position[0] + dr, obj.position[1] + dc)
        if f"directly {RELATIONS[direction]} {name}" in instruction and cell in POSITION_NAMES:
            lines.append(f"directly {RELATIONS[direction]} it: {POSITION_NAMES[cell]}")
        side = [o for o in scene.objects if o is not obj and related(o, obj, dr, dc, strict=False)]
        if f"the object {RELATIONS[direction]} {name}" in instruction and len(side) == 1:
            lines.append(f"the object {RELATIONS[direction]} it: {_name(side[0])}")
    return lines


def _cell_lines(scene: Scene, instruction: str) -> list[tuple[int, str]]:
    """(where the instruction says it, "the object in the middle right: small red circle") for each cell it names an object by."""
    return [(instruction.find(phrase), f"{phrase}: {_name(obj)}") for obj in scene.objects
            for phrase in [f"the object in the {POSITION_NAMES[obj.position]}"] if phrase in instruction]


def lookup_named(scene: Scene, instruction: str, found: bool = False) -> str:
    """Each object the instruction names by what it is (`lookup_names`: canonical, plain, riddle, superlative; the
    longest name per object), with its cell in the lookup drill's words (`found`: `found_line`'s, the name, its key,
    its cell), and what its relations point at; the object in a named cell. In the order the instruction says them.

    >>> from refine.shapes.world import Obj
    >>> scene = Scene("white", (Obj("circle", "red", "large", (1, 2)), Obj("triangle", "green", "small", (0, 0))))
    >>> lookup_named(scene, "add a blue square directly above the red circle")
    'the red circle is in the middle right; directly above it: top right corner'
    >>> lookup_named(scene, "make the shape with three sides the colour of the sky")
    'the shape with three sides is in the top left corner'
    >>> lookup_named(scene, "add a blue square directly above the red circle", found=True)   # rewrite_find's words
    'the red circle A middle right; directly above it: top right corner'
    """
    longest: dict[Obj, tuple[int, str]] = {}   # object -> (where the instruction says it, its longest name there)
    for name, obj in lookup_names(scene):
        said = re.search(rf"(?<!\w){re.escape(name)}(?!\w)", instruction)
        if said and len(name) > len(longest.get(obj, (0, ""))[1]):
            longest[obj] = (said.start(), name)

    def line(name: str, obj: Obj) -> str:
        cell = POSITION_NAMES[obj.position]
        return found_line(name, cell) if found else f"{name} is in the {cell}"

    lines = [(at, "; ".join([line(name, obj), *_beside_lines(scene, instruction, name, obj)])) for obj, (at, name) in longest.items()]
    lines += _cell_lines(scene, instruction)
    return "; ".join(text for _, text in sorted(lines))


def rewrite_lookup_example(case: ShapeCase) -> dict[str, Any]:
    """The rewrite after the cells (content first) and a lookup line for every object the instruction names.

    Opt-in (`seeing_tasks: {rewrite_lookup: ...}`), to follow the lookup drill (`lookup_example`), whose lines it
    writes after cells the model read itself. Unlike `rewrite_locate` (canonical names only), riddles and
    superlatives are looked up too: on val most wrong riddle rewrites named another object (stop 46).

    >>> from refine.shapes.data import stream_case
    >>> text = rewrite_lookup_example(stream_case(41, 1, indirect_fraction=1.0))["completion"][0]["content"][0]["text"]
    >>> text.startswith("<think>") and " in the top left corner; " in text and text.endswith("</answer>")
    True
    """
    return reasoned_example(case, "rewrite_lookup")


def rewrite_find_example(case: ShapeCase) -> dict[str, Any]:
    """The rewrite after finding, in the image, each object the instruction names: its cell right after its name.

    Opt-in (`seeing_tasks: {rewrite_find: ...}`). Why (stop 50): the lookup from a name to the cell the image holds
    it in is learnt only when the cell follows the name's last word (stop 49: the image-only lookup drill left
    chance with "the blue square top middle", never with "the blue square is in the top middle"), so the lines
    are `lookup_named`'s in `found_line`'s words, the name, its key, its cell ("the red circle A middle right;
    directly above it: top right corner"), and no cells are written first: the cell is read from the image, not
    from text the model wrote. Stream cases only.

    >>> from refine.shapes.data import stream_case
    >>> text = rewrite_find_example(stream_case(41, 1, indirect_fraction=1.0))["completion"][0]["content"][0]["text"]
    >>> text.startswith("<think>") and " is in the " not in text.split("</think>")[0] and text.endswith("</answer>")
    True
    """
    return reasoned_example(case, "rewrite_find")


def scan_named(scene: Scene, instruction: str, read: bool = False) -> str:
    """Each object `instruction` names without a cell, found by going through the cells in reading order, and what its
    relations point at; the object in a named cell; the largest / smallest object, found the same way.

    >>> from refine.shapes.world import Obj
    >>> scene = Scene("white", (Obj("circle", "red", "large", (1, 2)), Obj("triangle", "green", "small", (0, 0))))
    >>> scan_named(scene, "add a blue square directly above the red circle")
    'the red circle: top left corner no, top middle no, top right corner no, middle left no, center no, middle right match; directly above it: top right corner'
    >>> scan_named(scene, "remove the object in the top left corner")
    'the object in the top left corner: small green triangle'
    >>> scan_named(scene, "remove the red circle", read=True)
    'the red circle: top left corner: small green triangle, top middle: nothing, top right corner: nothing, middle left: nothing, center: nothing, middle right: large red circle match'
    """
    found = []   # (where the instruction says it, the line)
    for name, obj in _named_objects(scene, instruction):
        found.append((instruction.find(name), "; ".join([f"{name}: {_scan(scene, obj, read)}", *_beside_lines(scene, instruction, name, obj)])))
    found += _cell_lines(scene, instruction)
    for phrase, size in (("the largest object", "large"), ("the biggest object", "large"), ("the smallest object", "small")):
        sized = [o for o in scene.objects if o.size == size]
        if phrase in instruction and len(sized) == 1:
            found.append((instruction.find(phrase), f"{phrase}: {_scan(scene, sized[0], read)}"))
    return "; ".join(line for _, line in sorted(found))


def rewrite_scan_example(case: ShapeCase, read: bool = False) -> dict[str, Any]:
    """The rewrite after finding each object the instruction names the way the model reads: one cell at a time.

    Opt-in (`seeing_tasks: {rewrite_scan: ...}`). Why (stop 45): the model reads what is in a cell
    given the cell (the grid, 88% exact) but not a cell given what is in it ("Where is the red
    circle?": an occupied cell at random), and a cells-then-lookup text (`rewrite_locate`) was not
    looked up either. Here each named object is found by going through the cells in reading order,
    each checked against the name ("middle right match"), so every token needs one cell's content
    and the name a few tokens back; "directly above it: top right corner" then steps from the cell
    just written. `<think>` is empty when the instruction names no object (riddles). Stop 45: the
    no / match scan was not learnt (every cell "no", "match" at the last, after 1,000 steps); with
    `read` (each cell's content written as the grid says it, `seeing_tasks: {rewrite_scan_read: ...}`)
    the cells are read right but a third of scans stop at the named object, and the rewrite trained so
    is the best learned thinker on val, +0.006 [-0.009, +0.021] on shapes-bench
    (`refine/assets/shapes-thinker-scan`; benchmarks/RESULTS.md, "Finding a named object"). Stream cases only.

    >>> from refine.shapes.data import stream_case
    >>> example = rewrite_scan_example(stream_case(41, 0, indirect_fraction=1.0))
    >>> text = example["completion"][0]["content"][0]["text"]
    >>> text.startswith("<think>") and "</think><answer>" in text and text.endswith("</answer>")
    True
    """
    return reasoned_example(case, "rewrite_scan_read" if read else "rewrite_scan")


# The reasoning each rewrite-with-reasoning task writes in <think> (`reasoned_example`), by task name.
REWRITE_REASONING: dict[str, Callable[[ShapeCase], str]] = {
    "rewrite_think": lambda case: describe_scene(case.source),
    "rewrite_grid": lambda case: describe_grid(case.source),
    "rewrite_locate": lambda case: ". ".join(filter(None, (describe_cells(case.source), locate_named(case.source, case.instruction)))),
    "rewrite_scan": lambda case: scan_named(case.source, case.instruction),
    "rewrite_scan_read": lambda case: scan_named(case.source, case.instruction, read=True),
    "rewrite_lookup": lambda case: ". ".join(filter(None, (describe_cells(case.source), lookup_named(case.source, case.instruction)))),
    "rewrite_find": lambda case: lookup_named(case.source, case.instruction, found=True),
}


def _pair_at_example(case: ShapeCase, rng: random.Random) -> dict[str, Any]:
    """Two images, one cell of one of them asked: the model must tell which image a visual token belongs to.

    The images are the case's source and target (in either order) or, half the time, the source and
    another scene (the source after two random edits); half the questions ask a cell where the two
    differ, so the answer cannot be read off the other image. Opt-in (`seeing_tasks: {pair_at: ...}`):
    the judge compares an edit with its source, which a model that reads one image at a time cannot.
    """
    other = case.target
    if rng.random() < 0.5:
        other = case.source
        for _ in range(2):
            try:
                other = apply_edit(other, random_edit(other, rng))
            except InputError:  # no edit applies to this scene: keep what we have
                pass
    scenes = [case.source, other] if rng.random() < 0.5 else [other, case.source]
    differing = [p for p in POSITIONS if scenes[0].at(p) != scenes[1].at(p)]
    position = rng.choice(differing) if differing and rng.random() < 0.5 else rng.choice(POSITIONS)
    index = rng.randrange(2)
    question = QUESTIONS["pair_at"].format(position=POSITION_NAMES[position], which=("first", "second")[index])
    images = [render(scene, case.size) for scene in scenes]
    return _example(case, "pair_at", images, question, _name(scenes[index].at(position)))


def describe_not_in(asked: Scene, other: Scene) -> str:
    """The objects of `asked` whose cell holds something else (or nothing) in `other`, in reading order.

    >>> from refine.shapes.world import Obj
    >>> a = Scene("white", (Obj("circle", "red", "large", (0, 0)), Obj("square", "blue", "small", (1, 1))))
    >>> describe_not_in(a, Scene("white", (Obj("circle", "red", "large", (0, 0)),)))
    'center: small blue square'
    >>> describe_not_in(Scene("white", (Obj("circle", "red", "large", (0, 0)),)), a)
    'nothing'
    """
    parts = [f"{POSITION_NAMES[o.position]}: {_name(o)}" for o in sorted(asked.objects, key=lambda o: o.position)
             if other.at(o.position) != o]
    return "; ".join(parts) or "nothing"


def _altered(obj: Obj, rng: random.Random, background: str) -> Obj:
    """`obj` with one of its colour, shape or size changed."""
    attribute = rng.choice(("color", "shape", "size"))
    if attribute == "color":
        return dataclasses.replace(obj, color=rng.choice([c for c in COLOR_NAMES if c not in (obj.color, background)]))
    if attribute == "shape":
        return dataclasses.replace(obj, shape=rng.choice([s for s in SHAPES if s != obj.shape]))
    return dataclasses.replace(obj, size="small" if obj.size == "large" else "large")


def _not_in_example(case: ShapeCase, rng: random.Random, empty_rate: float = 0.25) -> dict[str, Any]:
    """Two images, "what is in the first (second) image that is not in the other?": a comparison learnt by parts.

    The asked scene is the case's source or target; the other is the asked scene with some of its
    objects removed or altered (none to all, uniformly many), or, a share `empty_rate`, its background
    alone. Why this task (stop 57): a judge's bare score must compare the edit with its source, and a
    label that depends only on whether two images are equal gives no gradient to a model that reads
    one image at a time (the contrast-only stage stays at a coin flip). Here the answer starts as
    reading one image (the other empty) and each object the other image shares takes something away,
    an effect of the other image that a model reading both cells can learn one step at a time.
    """
    asked = rng.choice((case.source, case.target))
    if rng.random() < empty_rate:
        other = Scene(asked.background, ())
    else:
        changed = rng.sample(list(asked.objects), rng.randint(0, len(asked.objects)))
        objects = []
        for obj in asked.objects:
            if obj not in changed:
                objects.append(obj)
            elif rng.random() < 0.5:
                objects.append(_altered(obj, rng, asked.background))
        other = Scene(asked.background, tuple(objects))
    index = rng.randrange(2)
    scenes = [asked, other] if index == 0 else [other, asked]
    question = QUESTIONS["not_in"].format(which=("first", "second")[index], other=("second", "first")[index])
    images = [render(scene, case.size) for scene in scenes]
    return _example(case, "not_in", images, question, describe_not_in(asked, other))


class _DatasetBackend:
    """Stands in for a VLM so `MLLMJudge` builds its prompts for a dataset; it is never asked to score."""

    name = "dataset"

    def next_token_probs(self, conversations, candidates, prefill="") -> list[ProbResult]:
        raise NotImplementedError("the dataset backend builds prompts only")

    def generate(self, conversations, max_new_tokens=128, temperature=0.0) -> list[str]:
        raise NotImplementedError("the dataset backend builds prompts only")


_JUDGES = {kind: MLLMJudge(_DatasetBackend(), mode=mode, cache=False) for kind, mode in _KIND_MODE.items()}


def read_reasoning(case: ShapeCase, score: JudgeScore, every_cell: bool = False) -> str:
    """The `score_read` judge's reasoning: find what the instruction names, say the edit directly, then read the output
    where the edit must change it and wherever it changed what must stay.

    Why (issue 23, stop 52): every judge trained on a bare score scored a perfect edit and the unchanged source
    alike, and one trained on the exact judge's failed checks (`score_cot`) had to write sentences it could not
    ground. This reasoning is built from steps the ShapeEdit VLM does learn: finding each named object in the
    source ("the red circle A middle right", `rewrite_find`'s lines, 87% of val rewrites exact after them), the
    direct phrasing (the thinker's answer), then one line per check of the exact judge (`JudgeScore.checks`),
    the cell first and then what the output holds there, which the model reads given the cell
    ("middle right: nothing -> small white triangle, found small white square with stray marks, part"). Only
    failed "keep" checks are written (the parser's clutter in a cell that had to stay empty, an object lost).
    The score that follows is then a count over verdicts the model has just written.

    `every_cell` (the `score_walk` kind): the background and all nine cells in reading order, each with one line
    (a change, or what must stay, or "nothing stays, found nothing, ok"), so the model never has to decide which
    cells to mention. Why: the `score_read` judge of stop 52 wrote "stays" lines for cells that had kept and missed
    cells that had not (half of its check lines started right), and its score followed what it wrote. Stream
    cases only.

    >>> from refine.shapes.data import stream_case
    >>> case = stream_case(41, 3, indirect_fraction=1.0)
    >>> text = read_reasoning(case, judge_edit(case.source_image, case.target_image, case))
    >>> "edit: " in text and text.endswith(", ok")
    True
    """
    find = REWRITE_REASONING["rewrite_find"](case)

    def line(check: Check) -> str:
        said = f"{check.was} -> {check.expected}" if check.kind == "change" else f"{check.expected} stays"
        return f"{check.cell}: {said}, found {check.found}, {check.verdict}"

    if every_cell:
        # a resized or recoloured object has a change and a keep check in its cell: the change line says both
        by_cell = {c.cell: c for c in sorted(score.checks, key=lambda c: c.kind == "change")}
        lines = [line(by_cell[cell]) if cell in by_cell else f"{cell}: nothing stays, found nothing, ok"
                 for cell in ("background", *(POSITION_NAMES[p] for p in POSITIONS))]
    else:
        lines = [line(c) for c in score.checks if c.kind == "change"] + [line(c) for c in score.checks if c.kind == "keep" and c.credit < 1.0]
    return ". ".join(filter(None, (find, f"edit: {case.direct_instruction}", "; ".join(lines))))


# the reasoning-first kinds, whose rows `bare_score_example` can ask again with the bare score prompt
REASONED_KINDS = ("score_cot", "score_read", "score_walk")


def bare_score_example(row: dict[str, Any]) -> dict[str, Any]:
    """A reasoning-first judge row (`REASONED_KINDS`) asked again with the bare score prompt, answered with its score.

    Why (issue 23, stop 56): the bundled judge's rows are 80% reasoning first, so its bare score (`score_logit`, the
    default of `judge: vlm` and of the reward presets) learned from a fifth of the editor outputs it saw. Re-asking
    an earlier stage's rows costs no editor sampling (about 4 CPU-minutes per 1,000 cases per output). The prompt
    is rebuilt by `MLLMJudge`'s own `user_text` from the row's instruction and requirement, and the reasoning
    prompt is rebuilt from them too and must equal the row's text, so a row whose prompt cannot be read back
    exactly is refused rather than converted wrong. The label is the row's own score, drawn from O once.

    >>> from refine.shapes.data import stream_case
    >>> case = stream_case(41, 3)
    >>> walk = judge_example(case, case.target_image, "score_walk", random.Random(0))
    >>> bare = judge_example(case, case.target_image, "score", random.Random(0))
    >>> bare_score_example(walk) == {**bare, "images": walk["images"]}
    True
    """
    task, source = row["task"].split(":", 1)
    kind = task.removeprefix("judge_")
    if kind not in REASONED_KINDS:
        raise InputError(f"bare_score_example takes a reasoning-first judge row ({', '.join(REASONED_KINDS)}), got {row['task']!r}")
    text = row["prompt"][-1]["content"][-1]["text"]
    instruction = re.search(r"^Instruction: (.*)$", text, re.M)
    requirement = re.search(r"^Requirements: (.*)$", text, re.M)
    meta = {"requirement": requirement.group(1)} if requirement else {}
    if instruction is None or requirement is None or _JUDGES[kind].user_text(instruction.group(1), meta) != text:
        raise InputError(f"the {row['task']} row of {row['case_id']} does not read back as its prompt: was it built with other prompts?")
    score = re.search(r'"Score": \[\[\d+\]\]$', row["completion"][0]["content"][0]["text"])
    if score is None:
        raise InputError(f"the {row['task']} row of {row['case_id']} has no score line at the end of its answer")
    prompt = [dict(turn) for turn in row["prompt"]]
    content = [dict(part) for part in prompt[-1]["content"]]
    content[-1]["text"] = _JUDGES["score"].user_text(instruction.group(1), meta)
    prompt[-1] = {**prompt[-1], "content": content}
    completion = [{"role": "assistant", "content": [{"type": "text", "text": score.group(0)}]}]
    return {**row, "task": f"judge_score:{source}", "prompt": prompt, "completion": completion}


def judge_example(case: ShapeCase, output: Image.Image, kind: str, rng: random.Random, source: str = "editor") -> dict[str, Any]:
    """One judge example: the conversation `MLLMJudge` sends in mode `kind`, answered from the exact judge's O."""
    judge = _JUDGES[kind]
    request = case.to_request()
    text = judge.user_text(request.instruction, request.meta)
    messages = judge.conversation(case.source_image, output, text)
    score = judge_edit(case.source_image, output, case)
    overall = score.overall
    if kind == "yesno":
        answer = '"Judgement": [[' + ("Yes" if overall >= YES_THRESHOLD else "No") + "]]"
    else:
        scaled = SCORE_HIGH * overall
        rating = math.floor(scaled) + (1 if rng.random() < scaled - math.floor(scaled) else 0)
        answer = '"Score": [[' + str(rating) + "]]"
        if kind == "score_cot":
            checks = [line.strip() for line in score.breakdown if "[ok]" not in line and not line.startswith("PQ")]
            answer = '"Reasoning": "' + "; ".join(checks) + '",\n' + answer
        elif kind in ("score_read", "score_walk"):
            answer = '"Reasoning": "' + read_reasoning(case, score, every_cell=kind == "score_walk") + '",\n' + answer
    system = messages[0]["content"][0]["text"] if messages[0]["role"] == "system" else None
    example = _example(case, f"judge_{kind}", [case.source_image, output], text, answer, system=system)
    example["task"] = f"judge_{kind}:{source}"
    example["overall"] = overall
    return example
