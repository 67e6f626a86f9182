"""Judge prompt templates: the Edit-R1 paper's (appendix C) as defaults, overridable from config.

Example:
    >>> from refine.rewards.prompts import JudgePrompts
    >>> prompts = JudgePrompts()
    >>> text = prompts.user_text("score", "make the circle blue", task="recolor")
    >>> text.splitlines()[0]
    'Here are two images: the original and the edited version. Please evaluate the edited image based on the following editing instructions and requirements.'
    >>> "Instruction: make the circle blue" in text and text.endswith('"Score": [[rating]](0-5).')
    True

Edit-R1 (UniWorld-V2, appendix C) builds every judge prompt from a *base instruction* (the
template: two images, the instruction, a rating scale, a response format) and a *task-specific
requirement* filled into ``{requirement}``, chosen by the edit's task type. The three templates
below reproduce the paper's "Yes/No", "Score" and "CoT Score" evaluations word for word (straight
quotes instead of typographic ones; the CoT template's response format, cut short in the paper,
is completed with the Score template's ``"Score": [[rating]](0-5).`` line). The paper does not
print its task requirements, so `DEFAULT_REQUIREMENTS` are ours, one per ImgEdit-style category
(the ShapeEdit categories included); override them per task in config.

The multi-turn template follows MT-EditFlow's multi-turn instruction-following prompt: the
original image and every turn's result in one query, a 1-5 rubric (Failed ... Fully Compliant),
and one ``<TurnKScore>X</TurnKScore>`` per turn, after a ``<Thought>`` analysis in thinking mode.

Placeholders are replaced literally (``{instruction}``, ``{requirement}``; ``{num_turns}``,
``{turns}``, ``{score_format}`` in the multi-turn template), so other braces in a custom template
are kept as written.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from refine.config import RefineConfig

SYSTEM_PROMPT = "You are a helpful assistant."

YESNO_TEMPLATE = """Here are two images: the original and the edited version. Please evaluate if the edited image successfully meets the following editing instructions and requirements.
Instruction: {instruction}
Requirements: {requirement}
You need to provide a "Yes" or "No" judgment based on the accuracy and quality of the edit.
Answer "Yes" if: The correct object was edited according to the instruction, all requirements were met, and the visual result is high quality.
Answer "No" if: The wrong object was edited, the edit fails to meet the requirements, or the visual quality is poor.
Response Format:
"Judgement": [[Yes/No]]"""

SCORE_TEMPLATE = """Here are two images: the original and the edited version. Please evaluate the edited image based on the following editing instructions and requirements.
Instruction: {instruction}
Requirements: {requirement}
You need to rate the editing result from 0 to 5 based on the accuracy and quality of the edit.
0: The wrong object was edited, or the edit completely fails to meet the requirements.
5: The correct object was edited, the requirements were met, and the visual result is high quality.
Response Format:
"Score": [[rating]](0-5)."""

COT_SCORE_TEMPLATE = """Here are two images: the original and the edited version. Please evaluate the edited image based on the following editing instruction and requirements.
Instruction: {instruction}
Requirements: {requirement}
You need to rate the editing result from 0 to 5 based on the accuracy and quality of the edit. Before that, analyze the image and provide some reasoning process for better evaluation (keep your reasoning concise).
0: The wrong object was edited, or the edit completely fails to meet the requirements.
5: The correct object was edited, the requirements were met, and the visual result is high quality.
Response Format:
"Reasoning": "...",
"Score": [[rating]](0-5)."""

# Task-specific requirements (ours: the paper names the mechanism but does not print its texts).
DEFAULT_REQUIREMENTS: dict[str, str] = {
    "general": "The edit does exactly what the instruction asks, changes nothing else, and looks natural.",
    "add": "The new object is added where the instruction says, with a plausible size, colour, lighting and perspective; everything else is unchanged.",
    "remove": "The named object is gone completely and the area behind it is filled in naturally, without traces; everything else is unchanged.",
    "replace": "The named object is replaced by the requested one at the same place and a matching scale; everything else is unchanged.",
    "recolor": "Only the named object's colour changes, to the requested colour; its shape, position and the rest of the image are unchanged.",
    "adjust": "Only the requested attribute of the named object changes (colour, material, texture, expression...); everything else is unchanged.",
    "move": "The named object is moved to the requested position and its old place is filled in naturally; its appearance and everything else are unchanged.",
    "resize": "The named object becomes larger or smaller as requested while keeping its shape, colour and position; everything else is unchanged.",
    "background": "The background changes as requested while the foreground objects keep their identity, position and appearance.",
    "style": "The whole image takes the requested style while its content and layout stay recognisable.",
    "text": "The requested text appears with the exact spelling, in the requested place, legible and matching the scene; other content is unchanged.",
    "extract": "Only the named object is kept, complete and undistorted, on a clean background.",
    "hybrid": "Every part of the multi-part instruction is carried out; nothing that was not asked for changes.",
    "reasoning": "The change the instruction implies (work out what it refers to first) is carried out correctly; everything else is unchanged.",
}

MULTI_TURN_TEMPLATE = """You are given the original image followed by the edited image after each of {num_turns} editing turns. Each turn applies its instruction to the image produced by the previous turn.
{turns}
Rate how well each turn's edited image follows that turn's instruction on a scale from 1 to 5:
1 Failed: Instruction completely ignored/opposite changes made, or critical original content destroyed
2 Minimal: Only minor parts of instruction followed, major elements missing/wrong, or severe content loss/unintended changes
3 Partial: Key instruction elements followed but incomplete/inaccurate, with noticeable original content loss/unintended modifications
4 Mostly Compliant: Instruction largely executed correctly with minor flaws, original content well-preserved with minimal unintended changes
5 Fully Compliant: Instruction accurately and completely executed, all non-targeted original content perfectly preserved
{score_format}"""

MULTI_TURN_THINKING_FORMAT = (
    "Provide analysis in <Thought> tag covering each turn's execution. Then give scores in format: "
    "<Thought> {analyses} </Thought> {scores}"
)
MULTI_TURN_DIRECT_FORMAT = "Give only the scores, in format: {scores}"


class JudgePrompts(RefineConfig):
    """The prompts of a single-turn MLLM judge; every field can be overridden from config."""

    system: str | None = Field(SYSTEM_PROMPT, description="system message (None: no system message)")
    yesno: str = Field(YESNO_TEMPLATE, description="user prompt of the yes/no modes; {instruction}, {requirement}")
    score: str = Field(SCORE_TEMPLATE, description="user prompt of the direct score modes; {instruction}, {requirement}")
    score_cot: str = Field(COT_SCORE_TEMPLATE, description="user prompt of the reason-then-score modes")
    requirements: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_REQUIREMENTS),
        description="task type -> requirement text; a task not listed uses requirements['general']",
    )
    score_prefill: str = Field('"Score": [[', description="assistant text after which the score token comes")
    yesno_prefill: str = Field('"Judgement": [[', description="assistant text after which Yes/No comes")

    @model_validator(mode="after")
    def _check(self) -> "JudgePrompts":
        for key in ("yesno", "score", "score_cot"):
            if "{instruction}" not in getattr(self, key):
                raise ValueError(f"prompt {key!r} has no {{instruction}} placeholder; add it where the edit instruction goes")
        if "general" not in self.requirements:
            raise ValueError("requirements needs a 'general' entry (used for tasks without their own requirement)")
        return self

    def requirement(self, task: str | None) -> str:
        return self.requirements.get(task or "general", self.requirements["general"])

    def user_text(self, kind: str, instruction: str, task: str | None = None, requirement: str | None = None) -> str:
        """The user prompt of `kind` ("yesno", "score" or "score_cot") for one edit.

        `requirement` replaces the task's requirement text when given.
        """
        template = getattr(self, kind)
        text = requirement if requirement is not None else self.requirement(task)
        return template.replace("{requirement}", text).replace("{instruction}", instruction)


class MultiTurnPrompts(RefineConfig):
    """The prompt of the multi-turn judge (one query scores every turn of a trajectory)."""

    system: str | None = Field(SYSTEM_PROMPT, description="system message (None: no system message)")
    template: str = Field(MULTI_TURN_TEMPLATE, description="user prompt; {num_turns}, {turns}, {score_format}")
    thinking_format: str = Field(MULTI_TURN_THINKING_FORMAT, description="{score_format} in thinking mode; {analyses}, {scores}")
    direct_format: str = Field(MULTI_TURN_DIRECT_FORMAT, description="{score_format} without thinking; {scores}")
    turn_line: str = Field("Turn {k} instruction: {instruction}", description="one line per turn in {turns}")
    score_min: int = Field(1, description="lowest score of the rubric")
    score_max: int = Field(5, description="highest score of the rubric")

    def user_text(self, instructions: list[str], thinking: bool) -> str:
        """The user prompt for one trajectory with one instruction per turn.

        >>> print(MultiTurnPrompts().user_text(["add a cat", "make it red"], thinking=False).splitlines()[-1])
        Give only the scores, in format: <Turn1Score>X</Turn1Score> <Turn2Score>X</Turn2Score>
        """
        n = len(instructions)
        scores = " ".join(f"<Turn{k}Score>X</Turn{k}Score>" for k in range(1, n + 1))
        analyses = " ".join(f"[Turn {k} analysis]" for k in range(1, n + 1))
        fmt = (self.thinking_format if thinking else self.direct_format).replace("{analyses}", analyses).replace("{scores}", scores)
        turns = "\n".join(
            self.turn_line.replace("{k}", str(k)).replace("{instruction}", text) for k, text in enumerate(instructions, 1)
        )
        return self.template.replace("{num_turns}", str(n)).replace("{turns}", turns).replace("{score_format}", fmt)
