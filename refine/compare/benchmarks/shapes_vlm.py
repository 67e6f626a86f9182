"""A VLM as the judge of a ShapeEdit comparison: `benchmark: {kind: shapes-bench, judge: vlm}`.

Example (the spec is checked when the benchmark is built; the model loads on the first score):
    >>> from refine.compare.benchmarks.shapes_vlm import VLMJudge
    >>> judge = VLMJudge({"kind": "mllm", "mode": "yesno_logit",
    ...                   "backend": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "shapes-vlm"}})
    >>> judge.metric, judge.label
    ('vlm_yesno_logit', 'VLM judge: yesno_logit, shapes-vlm')
    >>> VLMJudge("vln")
    Traceback (most recent call last):
    ...
    refine.errors.ConfigError: shapes-bench judge 'vln' is not a judge; write judge: vlm (the bundled ShapeEdit VLM) or an MLLM judge spec {kind: mllm, mode: score_logit, backend: {kind: transformers, model: /path/to/vlm}}

The judge, as written in the benchmark spec:
* `vlm`: the bundled ShapeEdit VLM (`refine/assets/shapes-vlm`, trained by `refine train vlm`, see
  `refine.shapes.vlm`) on the local transformers backend, read in Edit-R1's `score_logit` mode;
  `{kind: vlm, mode: yesno_logit, ...}` keeps that model and changes any other `MLLMJudge` setting.
* `{kind: mllm, mode: ..., backend: {...}}`: any MLLM judge of the rewards layer (`MLLMJudge`), on
  a local checkpoint (`{kind: transformers, model: PATH}`) or a served one (`{kind: openai, ...}`).
* `mode: [score_logit, score_logit_cot]` (either kind): the mean of several modes' scores of one model,
  each mode an `MLLMJudge` on one shared backend, combined by the rewards layer's `CompositeReward`
  (equal weights); the metric is `vlm_score_logit+score_logit_cot`. On the bundled ShapeEdit VLM the
  mean orders two edits of one input best, while the bare score ranks all edits best
  (`refine/assets/shapes-vlm/README.md`).
Every key is checked when the benchmark is built, before any edit: the kind, the mode, typos in
the judge's and the backend's settings, and that a local model folder exists.

What the report shows: the judge's score (in [0, 1]) is the headline metric and is named after the
judge (`vlm_score_logit`), so it never reads as ShapeEdit's O; ShapeEdit's exact judge is free, so
its `overall` (O = sqrt(IF x CC)), `if`, `cc`, `pq` stay beside it, computed as in a run without a
judge. The title carries the judge's label (`shapes-bench [VLM judge: score_logit, bundled shapes-vlm]`),
and `summary.md`, `report.html` and `summary.json` (`judge_protocol`) say which score is whose and
how well they agree (`agreement`): Pearson and Spearman correlation of the judge's score with O
over every scored edit, and the same-case pairwise accuracy, how often the judge orders two
entries' edits of one (case, seed) as O does (pairs with equal O left out; a judge tie counts half;
chance is 0.5). That last one is what a comparison asks of its judge.

Multi-turn splits: each turn is judged as one edit, from the image that turn edited (the previous
turn's output; the source scene for the first turn) with that turn's instruction; a sequence
scores the mean over its turns (None if a turn could not be read), each turn's score in its
`turn_scores`.

Cache: `key` hashes the judge spec as resolved (model paths absolute) and the size and mtime of
the model's files; the benchmark appends it to the exact judge's key, so a score cached without a
judge or under another judge (model, mode, retrained weights) is never read as this one's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from scipy.stats import pearsonr, spearmanr

from refine.compare.benchmarks.base import stable_hash
from refine.compare.benchmarks.mllm import check_judge
from refine.compare.entries import fingerprint, resolve_path
from refine.compare.stats import same_input_pairwise_accuracy
from refine.errors import ArtifactError, ConfigError
from refine.paths import MISSING_ASSETS
from refine.registry import registry, validate_params
from refine.rewards.backends.base import build_backend
from refine.rewards.base import CompositeReward, RewardOutput
from refine.rewards.mllm import MODES, MLLMJudge

BUNDLED_SHAPES_VLM = Path(__file__).resolve().parents[2] / "assets" / "shapes-vlm"
"""Folder of the trained ShapeEdit VLM shipped with the package (`judge: vlm`)."""

SHORTHAND = "vlm"
_SPEC_HINT = "{kind: mllm, mode: score_logit, backend: {kind: transformers, model: /path/to/vlm}}"


def bundled_vlm() -> Path:
    """The bundled ShapeEdit VLM's folder, or an `ArtifactError` saying how to get one."""
    if not (BUNDLED_SHAPES_VLM / "config.json").is_file():
        raise ArtifactError(f"judge: vlm needs the bundled ShapeEdit VLM, missing from {BUNDLED_SHAPES_VLM}: "
                            f"{MISSING_ASSETS['shapes-vlm']}; or name your model: judge: {_SPEC_HINT}")
    return BUNDLED_SHAPES_VLM


def judge_spec(value: Any, benchmark: str = "shapes-bench") -> dict[str, Any]:
    """The `mllm` reward spec `value` stands for, checked, its local model path made absolute (see the module docstring)."""
    if isinstance(value, str):
        if value != SHORTHAND:
            raise ConfigError(
                f"{benchmark} judge {value!r} is not a judge; write judge: {SHORTHAND} (the bundled ShapeEdit VLM) "
                f"or an MLLM judge spec {_SPEC_HINT}"
            )
        value = {"kind": SHORTHAND}
    if not isinstance(value, dict) or "kind" not in value:
        raise ConfigError(f"{benchmark} judge {value!r} has no 'kind'; write judge: {SHORTHAND} or {_SPEC_HINT}")
    spec = dict(value)
    if spec["kind"] == SHORTHAND:
        if "backend" in spec:
            raise ConfigError(
                f"{benchmark} judge kind {SHORTHAND!r} is the bundled model; to judge with another, write {_SPEC_HINT}"
            )
        spec = {**spec, "kind": "mllm", "backend": {"kind": "transformers", "model": str(bundled_vlm())}}
    if spec["kind"] != "mllm":
        raise ConfigError(
            f"{benchmark} judge kind {spec['kind']!r} is not an MLLM judge; use {SHORTHAND} or mllm "
            "(ShapeEdit's exact judge scores every run already)"
        )
    spec.setdefault("mode", "score_logit")
    judge_modes(spec["mode"], benchmark)
    validate_params(MLLMJudge, _judge_params(spec), label=f"{benchmark} judge", exclude={"backend", "mode"})
    if not isinstance(spec.get("backend"), dict):
        raise ConfigError(f"{benchmark} judge needs a backend mapping, e.g. {_SPEC_HINT}")
    backend = dict(check_judge({"backend": spec["backend"]}, benchmark).backend)  # kind, settings, model folder
    model = backend.get("model")
    if backend["kind"] == "transformers" and isinstance(model, str) and resolve_path(model) is not None:
        backend["model"] = str(resolve_path(model))  # relative to the working directory or the package
    return {**spec, "backend": backend}


def judge_modes(mode: Any, benchmark: str = "shapes-bench") -> list[str]:
    """The judge's modes, checked: one mode, or a list of distinct ones whose scores are averaged.

    >>> judge_modes("score_logit"), judge_modes(["score_logit", "score_logit_cot"])
    (['score_logit'], ['score_logit', 'score_logit_cot'])
    """
    modes = [mode] if isinstance(mode, str) else mode
    if not isinstance(modes, list) or not modes or not all(isinstance(m, str) for m in modes) or len(set(modes)) != len(modes):
        raise ConfigError(f"{benchmark} judge mode {mode!r}: give one mode or a list of distinct modes, "
                          "e.g. mode: [score_logit, score_logit_cot]")
    for one in modes:
        if one not in MODES:
            raise ConfigError(f"{benchmark} judge mode {one!r} is unknown; choose one of {', '.join(MODES)}")
    return list(modes)


def _judge_params(spec: dict[str, Any]) -> dict[str, Any]:
    """The `MLLMJudge` settings of a judge spec besides its kind, backend and mode(s)."""
    return {k: v for k, v in spec.items() if k not in ("kind", "backend", "mode")}


def build_judge(spec: dict[str, Any], modes: list[str]) -> MLLMJudge | CompositeReward:
    """The reward a checked spec (`judge_spec`) stands for: an `MLLMJudge`, or the mean of one per mode on one backend."""
    if len(modes) == 1:
        return registry.build("reward", spec)
    backend = build_backend(spec["backend"])  # loaded once, shared by the modes
    parts = {mode: MLLMJudge(backend, mode=mode, name=mode, **_judge_params(spec)) for mode in modes}
    return CompositeReward(parts, name="+".join(modes))


class VLMJudge:
    """A checked MLLM judge of ShapeEdit edits, built on first use; `metric`, `label` and `key` name it."""

    def __init__(self, value: Any, benchmark: str = "shapes-bench") -> None:
        self.written = value
        self.spec = judge_spec(value, benchmark)
        self.modes = judge_modes(self.spec["mode"], benchmark)
        self.mode: str = "+".join(self.modes)
        self.metric = f"vlm_{self.mode}"
        self._reward: MLLMJudge | CompositeReward | None = None

    @property
    def model(self) -> str:
        """The model's short name: the served model's name, or the last two parts of a local folder ("vlm-shapes/final")."""
        backend = self.spec["backend"]
        model = str(backend.get("model", backend["kind"]))
        if backend["kind"] != "transformers":
            return model
        if Path(model) == BUNDLED_SHAPES_VLM:
            return "bundled shapes-vlm"
        return "/".join(Path(model).parts[-2:])  # a run's `final/` alone would say nothing

    @property
    def label(self) -> str:
        return f"VLM judge: {self.mode}, {self.model}"

    @property
    def key(self) -> str:
        model = self.spec["backend"].get("model")
        found = resolve_path(model) if isinstance(model, str) else None
        return f"{self.metric}-{stable_hash({'judge': self.spec, 'model_files': fingerprint(found) if found else None})}"

    def __call__(self, sources, outputs, instructions, metas) -> RewardOutput:
        if self._reward is None:
            self._reward = build_judge(self.spec, self.modes)
        return self._reward(sources, outputs, instructions, metas)

    def _described(self) -> str:
        if len(self.modes) == 1:
            return f"MLLMJudge {self.mode}"
        return f"the mean of MLLMJudge {', '.join(self.modes[:-1])} and {self.modes[-1]}"

    def report(self, rows: Sequence[Any], exact: Sequence[str]) -> dict[str, Any]:
        """What `judge_protocol` of the report holds: the judge, which metrics are whose, the agreement, a note."""
        agree = agreement(rows, self.metric, exact[0])
        named = ", ".join(exact[:4]) + (" and the per-turn ones" if len(exact) > 4 else "")  # multi-turn: 16 of them
        note = (
            f"Judge: the headline {self.metric} is a VLM judge's score in [0, 1] ({self._described()}, model "
            f"{self.model}), not ShapeEdit's O; {named} are ShapeEdit's exact judge beside it "
            f"({exact[0]} = O). Agreement with the exact {exact[0]} over {agree['edits']} edits: Pearson "
            f"{_num(agree['pearson'])}, Spearman {_num(agree['spearman'])}; same-case pairwise accuracy "
            f"{_num(agree['pairwise_accuracy'])} over {agree['pairs']} pairs of entries (chance 0.5)."
        )
        backend = self.spec["backend"]
        return {
            "judge": self.written, "spec": self.spec, "mode": self.mode, "model": backend.get("model"),
            "metric": self.metric, "exact_metrics": list(exact), "agreement": agree, "note": note,
        }


def agreement(rows: Sequence[Any], metric: str, exact: str = "overall") -> dict[str, Any]:
    """How well `metric` (a judge's score) agrees with `exact` on report rows (`CaseRow`s); see the module docstring.

    >>> from types import SimpleNamespace as Row
    >>> rows = [Row(entry=e, case_id=c, seed=0, scores={"vlm": v, "overall": o})
    ...         for e, c, v, o in [("a", "x", 0.2, 0.0), ("b", "x", 0.9, 1.0), ("a", "y", 0.7, 0.5), ("b", "y", 0.6, 0.9)]]
    >>> a = agreement(rows, "vlm")
    >>> a["edits"], a["pairs"], a["pairwise_accuracy"], round(a["spearman"], 3)   # case x ordered as O, case y not
    (4, 2, 0.5, 0.8)
    """
    scored = [r for r in rows if r.scores.get(metric) is not None and r.scores.get(exact) is not None]
    judged, truth = [r.scores[metric] for r in scored], [r.scores[exact] for r in scored]
    varied = len(scored) >= 3 and len(set(judged)) > 1 and len(set(truth)) > 1  # else a correlation is undefined
    by_item: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for row in scored:
        by_item.setdefault((row.case_id, row.seed), []).append((row.scores[metric], row.scores[exact]))
    accuracy, pairs = same_input_pairwise_accuracy(by_item.values())
    return {
        "edits": len(scored),
        "pearson": float(pearsonr(judged, truth)[0]) if varied else None,
        "spearman": float(spearmanr(judged, truth)[0]) if varied else None,
        "pairs": pairs,
        "pairwise_accuracy": accuracy,
    }


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
