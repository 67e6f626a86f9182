"""The EditThinker output format: `<think>R</think><score>[S_sem, S_qual]</score><answer>T</answer>`.

Example:
    >>> from refine.thinker.format import parse_thinker_output, format_thinker_output
    >>> parsed = parse_thinker_output("<think>the cat is still red</think><score>[3, 8]</score><answer>make the cat blue</answer>")
    >>> parsed.ok, parsed.output.semantic, parsed.output.quality, parsed.output.answer
    (True, 3.0, 8.0, 'make the cat blue')
    >>> messy = parse_thinker_output('<answer>make the cat blue</answer> <score>{"semantic": 3, "quality": 8}</score>')
    >>> messy.ok, messy.output.semantic, messy.repairs
    (True, 3.0, ['blocks out of order: answer, score', 'no <think> block', 'scores given as a JSON dict'])
    >>> format_thinker_output(parsed.output)
    '<think>the cat is still red</think><score>[3, 8]</score><answer>make the cat blue</answer>'

Two styles share one grammar (the paper's Sec. 3.2 and App. C):

* `"scores"` (EditThinker): `<score>` holds the semantic score (instruction following of the
  edited image relative to the source) and the perceptual quality score, both 0-10.
* `"stop"` (the expert, e.g. GPT-4.1 in the paper): a stop flag instead of scores,
  `<stop>yes</stop>` / `<stop>no</stop>`, or a bare `<stop>` token meaning yes.

The parser is tolerant because the loop must survive any model output. What it accepts, and the
repair it reports for each (documented here once; `tests/thinker/test_format.py` holds the table):

* tag names in any case and with inner spaces (`< Think >`); blocks in any order ("blocks out of
  order"); text outside the blocks ("ignored text outside the tags");
* a block that is never closed ends at the next tag or at the end of the text ("unclosed <x>");
  a closing tag without its opening tag takes the text since the previous tag ("missing <x>");
  repeated blocks keep the last non-empty one ("N <x> blocks; kept the last non-empty one");
* scores as a list `[7, 8]`, a tuple, bare numbers `7, 8`, `7/10 8/10`, a JSON or YAML-like dict
  (`{"semantic": 7, "quality": 8}`, `sem: 7 qual: 8`); one number is the semantic score
  ("one score: quality missing"); values outside 0-10 are clamped ("clamped"); a score block
  without a number is dropped ("unreadable <score>");
* an answer wrapped in quotes or prefixed by a label such as `Refined instruction:` is unwrapped.

It rejects (`ok` is False, `error` says why, nothing is raised) an output with no recognisable
tag, one whose answer is missing or empty unless it says stop, and an answer longer than
`max_answer_chars` (a runaway generation is not an instruction). A rejected result still carries
whatever could be read (e.g. the reasoning) for the trace.

`parse_thinker_output_strict` is the opposite: it accepts the scores style exactly as written
above and nothing else (GRPO's format reward, `refine.thinker.grpo_rewards`, pays only for it, so
the forgiving parser's repairs are never rewarded):

    >>> parse_thinker_output_strict("<think>r</think><score>[3, 8]</score><answer>make it blue</answer>").ok
    True
    >>> parse_thinker_output_strict("<THINK>r</THINK><score>[3, 8]</score><answer>make it blue</answer>").error
    'not the exact <think>R</think><score>[S_sem, S_qual]</score><answer>T</answer> format'
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Literal

TAGS = ("think", "score", "stop", "answer")
CANONICAL_ORDER = {"think": 0, "score": 1, "stop": 1, "answer": 2}
MAX_ANSWER_CHARS = 2000

_TAG = re.compile(r"<\s*(/?)\s*(think|score|stop|answer)\s*>", re.IGNORECASE)
# "7/10" counts as 7; the denominator must not be read as a second score.
_NUMBER_OUT_OF = re.compile(r"(-?\d+(?:\.\d+)?)(?:\s*/\s*10(?:\.0+)?)?")
_NAMED = re.compile(
    r"(?P<name>semantic|sem|s_sem|instruction|quality|qual|s_qual|perceptual)[a-z_ ]*['\"]?\s*[:=]?\s*(?P<value>-?\d+(?:\.\d+)?)",
    re.IGNORECASE,
)
_LABEL = re.compile(r"^\s*(refined\s+)?(instruction|prompt|answer|edit)\s*:\s*", re.IGNORECASE)
# The strict grammar: the three blocks once each, lowercase tags, in order, only whitespace between
# and around them, two plain numbers in brackets.
_STRICT_NUMBER = r"\s*(\d+(?:\.\d+)?)\s*"
_STRICT = re.compile(
    r"\s*<think>(?P<think>.*?)</think>\s*<score>\[" + _STRICT_NUMBER + "," + _STRICT_NUMBER
    + r"\]</score>\s*<answer>(?P<answer>.*?)</answer>\s*",
    re.DOTALL,
)
_YES = {"yes", "true", "1", "stop", "y"}
_NO = {"no", "false", "0", "continue", "n"}


@dataclass(frozen=True)
class ThinkerOutput:
    """What a thinker said: reasoning R_t, scores S_t (0-10) or a stop flag, and the refined T_t.

    Example:
        >>> ThinkerOutput(reasoning="ok", semantic=9, quality=8, answer="keep it").scores
        {'semantic': 9.0, 'quality': 8.0}
    """

    reasoning: str = ""
    semantic: float | None = None
    quality: float | None = None
    stop: bool | None = None
    answer: str | None = None

    def __post_init__(self) -> None:
        for name in ("semantic", "quality"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, float(value))

    @property
    def scores(self) -> dict[str, float]:
        """The scores that are present, by name (what `refine.types.Step.scores` stores)."""
        return {k: v for k, v in (("semantic", self.semantic), ("quality", self.quality)) if v is not None}


@dataclass
class ParseResult:
    """The outcome of `parse_thinker_output`: the (possibly partial) output, repairs and error.

    Example:
        >>> result = parse_thinker_output("!!@@ garbage")
        >>> result.ok, result.error
        (False, 'no EditThinker tags (<think>, <score>, <stop>, <answer>) in the output')
    """

    output: ThinkerOutput
    repairs: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def parse_thinker_output(text: str, *, max_answer_chars: int = MAX_ANSWER_CHARS) -> ParseResult:
    """Read a thinker's raw text into a `ParseResult`; never raises (see the module docstring)."""
    text = text if isinstance(text, str) else ("" if text is None else str(text))
    repairs: list[str] = []
    blocks, outside = _split_blocks(text, repairs)
    if not blocks:
        return ParseResult(ThinkerOutput(), repairs, "no EditThinker tags (<think>, <score>, <stop>, <answer>) in the output")
    if outside.strip():
        repairs.append("ignored text outside the tags")
    order = [name for name, _ in blocks]
    firsts = list(dict.fromkeys(order))
    if [CANONICAL_ORDER[n] for n in firsts] != sorted(CANONICAL_ORDER[n] for n in firsts):
        repairs.append("blocks out of order: " + ", ".join(firsts))
    chosen = {name: _pick(name, [body for n, body in blocks if n == name], repairs) for name in firsts}

    reasoning = (chosen.get("think") or "").strip()
    if "think" not in chosen:
        repairs.append("no <think> block")
    semantic = quality = None
    if "score" in chosen:
        semantic, quality = _parse_scores(chosen["score"], repairs)
    stop = _parse_stop(chosen["stop"], repairs) if "stop" in chosen else None
    answer = _clean_answer(chosen.get("answer"), repairs)
    output = ThinkerOutput(reasoning=reasoning, semantic=semantic, quality=quality, stop=stop, answer=answer)

    error = None
    if answer is None and stop is not True:
        error = "no <answer> block (and no stop flag)" if "answer" not in chosen else "empty <answer> block"
    elif answer is not None and len(answer) > max_answer_chars:
        error = f"<answer> is {len(answer)} characters long (limit {max_answer_chars}): a runaway generation, not an instruction"
    return ParseResult(output, repairs, error)


def parse_thinker_output_strict(text: str, *, max_answer_chars: int = MAX_ANSWER_CHARS) -> ParseResult:
    """Read `text` only if it is exactly `<think>R</think><score>[S_sem, S_qual]</score><answer>T</answer>`.

    No repairs: tags in lowercase without spaces, each block once and in that order, nothing but
    whitespace outside them, a non-empty reasoning and answer, two numbers in [0, 10] written as a
    list, and nothing the forgiving parser would repair (a quoted or labelled answer, a tag inside
    a block). Whitespace between blocks and line breaks inside the answer are allowed (the
    forgiving parser does not count them as repairs either). Never raises; `error` says why not.

    Example:
        >>> parse_thinker_output_strict("<think>r</think><score>[3, 8]</score><answer>make it blue</answer>").output.scores
        {'semantic': 3.0, 'quality': 8.0}
        >>> [parse_thinker_output_strict(t).error is None for t in (
        ...     "<think>r</think><score>[3]</score><answer>x</answer>",              # one score
        ...     "<think>r</think><score>3, 8</score><answer>x</answer>",             # not a list
        ...     "<think>r</think><score>[3, 12]</score><answer>x</answer>",          # out of range
        ...     "Sure! <think>r</think><score>[3, 8]</score><answer>x</answer>",     # text outside
        ...     '<think>r</think><score>[3, 8]</score><answer>"x"</answer>')]       # quoted answer
        [False, False, False, False, False]
    """
    text = text if isinstance(text, str) else ""
    match = _STRICT.fullmatch(text)
    if match is None:
        return ParseResult(ThinkerOutput(), [], "not the exact <think>R</think><score>[S_sem, S_qual]</score><answer>T</answer> format")
    semantic, quality = float(match.group(2)), float(match.group(3))
    reasoning, answer = match.group("think").strip(), match.group("answer").strip()
    output = ThinkerOutput(reasoning=reasoning, semantic=semantic, quality=quality, answer=answer)
    if _TAG.search(reasoning) or _TAG.search(answer):
        return ParseResult(output, [], "a tag inside a block")
    if not reasoning or not answer:
        return ParseResult(output, [], "empty <think> or <answer> block")
    if not (semantic <= 10.0 and quality <= 10.0):
        return ParseResult(output, [], "a score outside 0-10")
    forgiving = parse_thinker_output(text, max_answer_chars=max_answer_chars)
    if not forgiving.ok or forgiving.repairs:
        return ParseResult(output, [], forgiving.error or "the forgiving parser repairs it: " + "; ".join(forgiving.repairs))
    return ParseResult(forgiving.output, [], None)


def format_thinker_output(output: ThinkerOutput, style: Literal["scores", "stop"] | None = None) -> str:
    """Serialize `output` in the canonical form the parser reads back unchanged (SFT targets).

    `style` defaults to "stop" when the output has a stop flag and no scores, else "scores".

    Example:
        >>> format_thinker_output(ThinkerOutput(reasoning="done", stop=True, answer="make it blue"))
        '<think>done</think><stop>yes</stop><answer>make it blue</answer>'
    """
    if style is None:
        style = "stop" if output.stop is not None and output.semantic is None else "scores"
    parts = [f"<think>{output.reasoning}</think>"]
    if style == "scores":
        scores = [_number(output.semantic), _number(output.quality)]
        parts.append(f"<score>[{', '.join(s for s in scores if s is not None)}]</score>")
    else:
        parts.append(f"<stop>{'yes' if output.stop else 'no'}</stop>")
    parts.append(f"<answer>{output.answer or ''}</answer>")
    return "".join(parts)


def _number(value: float | None) -> str | None:
    if value is None:
        return None
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _split_blocks(text: str, repairs: list[str]) -> tuple[list[tuple[str, str]], str]:
    """(name, body) blocks in textual order, plus the text found outside every block.

    Hand-written rather than an HTML/XML parser: model output is not well-formed markup (unclosed
    and orphan tags are the common case), and each repair must be reported by name.
    """
    tags = list(_TAG.finditer(text))
    blocks: list[tuple[str, str]] = []
    outside: list[str] = []
    cursor = 0  # end of the last consumed tag or block
    i = 0
    while i < len(tags):
        tag = tags[i]
        closing, name = tag.group(1) == "/", tag.group(2).lower()
        if closing:
            # An orphan closing tag: the text since the previous tag is its body (Qwen3-style
            # chat templates put `<think>` in the prompt, so outputs start with "...</think>").
            blocks.append((name, text[cursor : tag.start()]))
            repairs.append(f"missing <{name}>")
            cursor = tag.end()
            i += 1
            continue
        outside.append(text[cursor : tag.start()])
        nxt = tags[i + 1] if i + 1 < len(tags) else None
        if nxt is not None and nxt.group(1) == "/" and nxt.group(2).lower() == name:
            blocks.append((name, text[tag.end() : nxt.start()]))
            cursor = nxt.end()
            i += 2
            continue
        end = nxt.start() if nxt is not None else len(text)
        body = text[tag.end() : end]
        if not (name == "stop" and not body.strip()):
            repairs.append(f"unclosed <{name}>")  # a bare <stop> token is legitimate, not a repair
        blocks.append((name, body))
        cursor = end
        i += 1
    outside.append(text[cursor:])
    return blocks, "".join(outside)


def _pick(name: str, bodies: list[str], repairs: list[str]) -> str:
    if len(bodies) > 1:
        repairs.append(f"{len(bodies)} <{name}> blocks; kept the last non-empty one")
    non_empty = [b for b in bodies if b.strip()]
    return non_empty[-1] if non_empty else bodies[-1]


def _parse_scores(body: str, repairs: list[str]) -> tuple[float | None, float | None]:
    values: list[float] | None = None
    named: dict[str, float] = {}
    stripped = body.strip()
    try:
        data = json.loads(stripped)
    except ValueError:
        data = None
    if isinstance(data, dict):
        named = _named_scores(" ".join(f"{k}: {v}" for k, v in data.items()))
        repairs.append("scores given as a JSON dict")
    elif isinstance(data, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in data):
        values = [float(v) for v in data]
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        values = [float(data)]
    else:
        named = _named_scores(stripped)
        if named:
            repairs.append("scores given as named values")
        else:
            values = [float(m.group(1)) for m in _NUMBER_OUT_OF.finditer(stripped)]
            if values and not (stripped.startswith("[") and stripped.endswith("]")):
                repairs.append("scores not written as a list")
    if named:
        semantic, quality = named.get("semantic"), named.get("quality")
    elif values:
        if len(values) > 2:
            repairs.append(f"{len(values)} scores; kept the first two")
        semantic, quality = values[0], (values[1] if len(values) > 1 else None)
    else:
        repairs.append("unreadable <score>; dropped")
        return None, None
    if semantic is not None and quality is None:
        repairs.append("one score: quality missing")
    return _clamp(semantic, repairs), _clamp(quality, repairs)


def _named_scores(text: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for match in _NAMED.finditer(text):
        key = match.group("name").lower()
        kind = "quality" if key in ("quality", "qual", "s_qual", "perceptual") else "semantic"
        found.setdefault(kind, float(match.group("value")))
    return found


def _clamp(value: float | None, repairs: list[str]) -> float | None:
    if value is None or math.isnan(value):
        return None
    if not 0.0 <= value <= 10.0:
        repairs.append(f"score {value:g} clamped to 0-10")
        return min(10.0, max(0.0, value))
    return value


def _parse_stop(body: str, repairs: list[str]) -> bool | None:
    word = body.strip().strip(".!\"'").lower()
    if not word or word in _YES:
        return True
    if word in _NO:
        return False
    repairs.append(f"unreadable <stop> value {body.strip()[:20]!r}; ignored")
    return None


def _clean_answer(body: str | None, repairs: list[str]) -> str | None:
    if body is None:
        return None
    answer = body.strip()
    for _ in range(2):  # '"Refined instruction: x"' and 'Refined instruction: "x"' both occur
        if len(answer) >= 2 and answer[0] == answer[-1] and answer[0] in "\"'`":
            answer = answer[1:-1].strip()
            repairs.append("removed quotes around the answer")
        label = _LABEL.match(answer)
        if label:
            answer = answer[label.end() :].strip()
            repairs.append(f"removed the label {label.group(0).strip()!r}")
    answer = " ".join(answer.split())  # instructions are one line; models wrap at random
    return answer or None
