"""Prompts of the two VLM thinker roles: EditThinker (scores) and the expert (stop flag).

Example:
    >>> from refine.thinker.prompts import get_prompts, render
    >>> prompts = get_prompts("thinker")
    >>> text = render(prompts.critique, instruction="make the cat blue", previous_instruction="recolor the cat")
    >>> "make the cat blue" in text and "recolor the cat" in text and "<score>" in text
    True
    >>> get_prompts("expert").output_style
    'stop'

The paper shows its two prompt templates only as figures (Fig. 6: the expert, Fig. 7:
EditThinker); these are written from what Sec. 3.2 and App. C say they contain, in the paper's
output format. Both see the tuple of Eq. (1): image 1 is the source I_src, image 2 the current
edit I_edit^t, then the original instruction T_s and the instruction T_t that produced image 2.

* EditThinker prompt: critique, then `<score>[semantic, quality]</score>` (0-10 each), then the
  refined instruction; the loop stops on the semantic score.
* Expert prompt (GPT-4.1 in the paper): (1) does the edit fulfil T_s, (2) why not, (3) an
  improved instruction that fixes it without new inconsistencies, and a stop flag instead of
  scores (the paper found one expert bad at doing both well).
* `rewrite`: the think-before-edit variant (source image only, no critique).
* `shapes-rewrite`, `shapes-rewrite-think`, `-grid`, `-locate`, `-scan`, `-scan-read` and `-lookup`: the ShapeEdit VLM's own
  `rewrite` question and its rewrite-with-reasoning ones (`REWRITE_REASONING`) (`refine.shapes.vlm.tasks`), for a model fine-tuned on them (`refine train vlm` with
  `seeing_tasks: {rewrite: ...}`): the reply is the rewritten instruction alone, no tags
  (`output_style="answer"`), or the scene (its grid, or the named objects found in it) in `<think>` then the rewrite in `<answer>`
  (`output_style="think"`, the paper's think-before-edit reply). Both only rewrite before the first
  edit (think-before-edit with one edit): no critique, no score (`PromptSet.rewrite_only`).

Templates are plain text with `{instruction}` and `{previous_instruction}` placeholders, filled by
`render` (plain replacement, so templates may contain other braces, e.g. a JSON example).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from refine.errors import ConfigError
PLACEHOLDERS = ("{instruction}", "{previous_instruction}")


@dataclass(frozen=True)
class PromptSet:
    """The texts a `VLMThinker` sends: a system prompt, the critique and the rewrite templates.

    `output_style` is what the model answers: the paper's tags with scores ("scores") or with a stop
    flag ("stop"); or, for a rewrite-only model, which cannot critique (its `critique` is never
    sent), the refined instruction alone ("answer") or `<think>R</think><answer>T</answer>` ("think").
    `text_first` puts the text before the images in the user turn (a model trained with the question first,
    `data.question_first` of `refine train vlm`).
    """

    system: str
    critique: str
    rewrite: str
    output_style: Literal["scores", "stop", "answer", "think"]
    text_first: bool = False

    @property
    def rewrite_only(self) -> bool:
        """Whether these prompts only rewrite before the first edit (no critique template, no scores)."""
        return self.output_style in ("answer", "think")

    def with_overrides(self, system: str | None = None, critique: str | None = None, rewrite: str | None = None) -> "PromptSet":
        """A copy with the given texts replaced; a critique template must keep `{instruction}`.

        Example:
            >>> get_prompts("thinker").with_overrides(critique="Rate it.")
            Traceback (most recent call last):
            ...
            refine.errors.ConfigError: critique template must contain {instruction} (the original instruction); got 'Rate it.'
        """
        for name, text in (("critique", critique), ("rewrite", rewrite)):
            if text is not None and "{instruction}" not in text:
                raise ConfigError(f"{name} template must contain {{instruction}} (the original instruction); got {text[:60]!r}")
        changes = {k: v for k, v in (("system", system), ("critique", critique), ("rewrite", rewrite)) if v is not None}
        return replace(self, **changes)


def render(template: str, *, instruction: str, previous_instruction: str) -> str:
    """Fill the placeholders of `template` (plain replacement; other braces are left alone)."""
    return template.replace("{instruction}", instruction).replace("{previous_instruction}", previous_instruction)


_IMAGES = (
    "Image 1 is the original source image. Image 2 is the result of editing Image 1 with the "
    "instruction used in the last round.\n"
    "Original instruction (what the user wants): {instruction}\n"
    "Instruction used in the last round (what produced Image 2): {previous_instruction}\n\n"
)

THINKER_SYSTEM = (
    "You are EditThinker, an expert in instruction-based image editing. You judge an edited image "
    "against the user's instruction and write a better instruction for the image editor."
)

THINKER_CRITIQUE = (
    _IMAGES
    + "Do three things, in order.\n"
    "1. Critique: compare Image 2 with Image 1 and the original instruction. Say what was done "
    "correctly, what is missing or wrong (wrong object, attribute, count, position, colour, "
    "unwanted changes elsewhere), and how good the image looks.\n"
    "2. Score: a semantic score from 0 to 10 (how well Image 2 follows the original instruction "
    "relative to Image 1, 10 = perfectly) and a quality score from 0 to 10 (perceptual quality of "
    "Image 2: artefacts, distortions, naturalness).\n"
    "3. Refine: write one instruction for the editor, applied to Image 1 again, that fixes the "
    "problems you found. Be explicit and concrete: name objects, colours, positions and sizes; "
    "resolve anything the original instruction only implies; keep everything the user did not ask "
    "to change. If Image 2 is already right, repeat the last instruction.\n\n"
    "Answer exactly in this format:\n"
    "<think>your critique</think><score>[semantic, quality]</score><answer>the refined instruction</answer>"
)

EXPERT_SYSTEM = (
    "You are an expert image-editing supervisor. You decide whether an edit satisfies the user "
    "and, if not, you rewrite the instruction so that the image editor gets it right."
)

EXPERT_CRITIQUE = (
    _IMAGES
    + "1. Evaluate whether Image 2 fulfils the original instruction applied to Image 1.\n"
    "2. If it does not, reason in detail about why the edit failed: which part of the request was "
    "ignored, misread or overdone, and what the editor may have misunderstood in the last "
    "instruction.\n"
    "3. Write an improved instruction, applied to Image 1 again, that corrects these errors "
    "without introducing new inconsistencies: explicit, concrete, and faithful to what the user "
    "asked.\n"
    "Say stop (yes) only when Image 2 already satisfies the user's intent; then repeat the last "
    "instruction as the answer.\n\n"
    "Answer exactly in this format:\n"
    "<think>your reasoning</think><stop>yes or no</stop><answer>the improved instruction</answer>"
)

REWRITE = (
    "The image is the source image to be edited.\n"
    "User instruction: {instruction}\n\n"
    "Before any edit is made, rewrite the instruction so that an image editor can follow it "
    "directly: resolve what it only implies, and name the objects, colours, positions and sizes "
    "involved. Keep everything the user did not ask to change.\n\n"
    "Answer exactly in this format:\n"
    "<think>your reasoning</think><answer>the rewritten instruction</answer>"
)

# The thinker's prompt for a small model (the ShapeEdit VLM): the same task in a few lines, the
# original instruction last, next to where the answer starts. A 4-layer model fine-tuned on the
# full prompt, where ~200 tokens of instructions separate the user's instruction from the answer,
# wrote the format but never the user's edit (0 of 24 rewrites right on shapes-val, stop 36).
BRIEF_CRITIQUE = (
    "Image 1 is the source. Image 2 is Image 1 edited with the last instruction.\n"
    "Critique Image 2, score it <score>[semantic, quality]</score> from 0 to 10, and write the refined "
    "instruction in <answer></answer>.\n"
    "Last instruction: {previous_instruction}\n"
    "Original instruction: {instruction}"
)

PROMPTS: dict[str, PromptSet] = {
    "thinker": PromptSet(THINKER_SYSTEM, THINKER_CRITIQUE, REWRITE, "scores"),
    "thinker-brief": PromptSet(THINKER_SYSTEM, BRIEF_CRITIQUE, REWRITE, "scores"),
    "expert": PromptSet(EXPERT_SYSTEM, EXPERT_CRITIQUE, REWRITE, "stop"),
}

# Rewrite-only models (no critique template: the loop never asks them for one, see ThinkerConfig):
# the ShapeEdit VLM's own questions, word for word as it was trained (`refine.shapes.vlm.tasks`).
# A thinker fine-tuned on 96,000 stream cases of "rewrite" rewrites 73% of shapes-val's indirect
# instructions exactly, where the thinker's own prompts kept a third of that (issue 24, stops 37-39).
# name -> (question, output style); the questions are read on first use, because importing the
# tasks module here (it loads ShapeEdit's judge) adds ~0.17 s to every `import refine.thinker`.
SHAPES_QUESTIONS: dict[str, tuple[str, str]] = {
    "shapes-rewrite": ("rewrite", "answer"),
    "shapes-rewrite-think": ("rewrite_think", "think"),
    "shapes-rewrite-grid": ("rewrite_grid", "think"),
    "shapes-rewrite-locate": ("rewrite_locate", "think"),
    "shapes-rewrite-scan": ("rewrite_scan", "think"),
    "shapes-rewrite-scan-read": ("rewrite_scan_read", "think"),
    "shapes-rewrite-lookup": ("rewrite_lookup", "think"),
    "shapes-rewrite-find": ("rewrite_find", "think"),
}
# the same questions before the image, for a model trained with `data.question_first` (stop 49): "-qf" names
QUESTION_FIRST_SUFFIX = "-qf"
# every name `get_prompts` knows: ThinkerConfig's `prompt` accepts exactly these
PROMPT_NAMES: tuple[str, ...] = (*PROMPTS, *SHAPES_QUESTIONS, *(name + QUESTION_FIRST_SUFFIX for name in SHAPES_QUESTIONS))


def get_prompts(name: str) -> PromptSet:
    """The built-in prompt set `name` ("thinker", "thinker-brief" for a small model, "expert",
    "shapes-rewrite[-think|-grid|-locate|-scan|-scan-read|-lookup|-find][-qf]"; "-qf": the question before the image).

    >>> get_prompts("shapes-rewrite").rewrite.splitlines()[-1], get_prompts("shapes-rewrite").rewrite_only
    ('Instruction: {instruction}', True)
    >>> get_prompts("shapes-rewrite-qf").text_first
    True
    """
    if name in PROMPTS:
        return PROMPTS[name]
    base = name.removesuffix(QUESTION_FIRST_SUFFIX)
    if base in SHAPES_QUESTIONS:
        from refine.shapes.vlm.tasks import QUESTIONS, SYSTEM_PROMPT

        question, style = SHAPES_QUESTIONS[base]
        return PromptSet(SYSTEM_PROMPT, "", QUESTIONS[question], style, text_first=name != base)
    raise ConfigError(f"unknown thinker prompt set {name!r}; choose one of {', '.join(PROMPT_NAMES)}")
