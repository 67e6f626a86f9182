"""A VLM backend that answers from a script, for judge-protocol tests with hand-computed tables.

Example:
    >>> from refine.testing.scripted_vlm import ScriptedVLM
    >>> vlm = ScriptedVLM(answers={"green": ['"score": [9, 4]', '"score": [7, 7]']}, default="no idea")
    >>> ask = lambda text: [{"role": "user", "content": [{"type": "text", "text": text}]}]
    >>> vlm.generate([ask("make it green"), ask("make it red")]), vlm.generate([ask("make it green")])
    (['"score": [9, 4]', 'no idea'], ['"score": [7, 7]'])

`answers` maps a substring of the question to the answers given on its 1st, 2nd, ... time (the
last one repeats); the first substring found in the question's text wins, `default` otherwise.
Usable as a judge backend kind: ``{kind: refine.testing.scripted_vlm:ScriptedVLM, answers: {...}}``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

from refine.rewards.backends.base import ProbResult


class ScriptedVLM:
    def __init__(self, answers: dict[str, list[str] | str] | None = None, default: str = "", model: str = "scripted") -> None:
        self.answers = {k: [v] if isinstance(v, str) else list(v) for k, v in (answers or {}).items()}
        self.default, self.model, self.name = default, model, f"scripted:{model}"
        self.asked: Counter = Counter()
        self.questions: list[str] = []
        self.layouts: list[str] = []  # per question, its content parts in order, e.g. "text,image,image"

    def generate(self, conversations: Sequence[list[dict[str, Any]]], max_new_tokens: int = 64, temperature: float = 0.0) -> list[str]:
        out = []
        for messages in conversations:
            text = "\n".join(part["text"] for m in messages for part in m["content"] if part.get("type") == "text")
            self.questions.append(text)
            self.layouts.append(",".join(part.get("type") for m in messages for part in m["content"]))
            key = next((k for k in self.answers if k in text), None)
            if key is None:
                out.append(self.default)
                continue
            answers = self.answers[key]
            out.append(answers[min(self.asked[key], len(answers) - 1)])
            self.asked[key] += 1
        return out

    def next_token_probs(self, conversations, candidates, prefill: str = "") -> list[ProbResult]:
        return [ProbResult({c: 1.0 / len(candidates) for c in candidates}, 1.0) for _ in conversations]
