"""What `refine edit --thinker ... --max-turns N` needs: wrap the editor, print turns, save the trace.

Example:
    >>> import io
    >>> from PIL import Image
    >>> from rich.console import Console
    >>> from refine.types import EditRequest, EditResult
    >>> from refine.thinker.cli_support import wrap_with_thinker
    >>> class Echo:                                  # any editor
    ...     def edit(self, requests):
    ...         return [EditResult(r.image, r.instruction) for r in requests]
    >>> out = io.StringIO()
    >>> editor = wrap_with_thinker(Echo(), "expert", max_turns=2, console=Console(file=out, width=200))
    >>> out.getvalue()
    'thinker expert, up to 2 turns\\n'

The CLI command owns argument parsing and image I/O; this module owns everything thinker-specific
so that the command only adds two options and one call (`wrap_with_thinker`). Importing it is
cheap (no torch): the thinker is built inside the call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from refine.editor import Editor, compose
from refine.thinker.loop import TurnEvent


class TurnPrinter:
    """Loop observer printing one line per turn: scores, the instruction it ran, the next one, why it stopped."""

    def __init__(self, console: Any | None = None, show_reasoning: bool = False) -> None:
        if console is None:
            from rich.console import Console

            console = Console(stderr=True)
        self.console = console
        self.show_reasoning = show_reasoning

    def header(self, thinker: str, max_turns: int) -> None:
        self.console.print(f"thinker {thinker}, up to {max_turns} turns", highlight=False, markup=False)

    def on_turn(self, event: TurnEvent) -> None:
        thought = event.thought
        parts = [f"[{event.index}] turn {event.turn}"]
        if event.turn == 0:
            parts.append("think before edit")
        else:
            parts.append(f"ran {event.instruction!r}")
        if thought is not None:
            scores = "  ".join(f"{k} {v:.1f}" for k, v in thought.scores.items())
            if scores:
                parts.append(scores)
            if thought.stop is not None:
                parts.append(f"stop flag {'yes' if thought.stop else 'no'}")
            if not thought.ok:
                parts.append(f"thinker failed: {thought.error}")
            elif thought.instruction and event.stop_reason is None:
                parts.append(f"next {thought.instruction!r}")
        if event.stop_reason is not None:
            parts.append(f"stopped: {event.stop_reason}")
        self.console.print("  ".join(parts), highlight=False, markup=False, soft_wrap=True)
        if self.show_reasoning and thought is not None and thought.reasoning:
            self.console.print(f"    reasoning: {thought.reasoning}", highlight=False, markup=False, soft_wrap=True)

    def on_finish(self, index: int, request: Any, result: Any) -> None:
        summary = result.meta.get("thinker", {})
        self.console.print(
            f"[{index}] kept turn {summary.get('chosen_turn')} of {summary.get('turns')} "
            f"({summary.get('editor_calls')} editor calls): {result.instruction!r}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


def default_trace_dir(output: str | Path) -> Path:
    """Where the CLI saves the trace of an edit written to `output`: `out.png` -> `out.trace/`.

    Example:
        >>> str(default_trace_dir("results/cat.png"))
        'results/cat.trace'
    """
    output = Path(output)
    return output.with_name(output.stem + ".trace") if output.suffix else output / "trace"


def wrap_with_thinker(
    editor: Editor,
    thinker: str,
    max_turns: int = 5,
    trace_dir: str | Path | None = None,
    console: Any | None = None,
    overrides: dict[str, Any] | None = None,
) -> Editor:
    """`editor` refined by the Think-while-Edit loop, printing each turn and writing the trace.

    `thinker` is a `ThinkerConfig.thinker` spec ("expert", "vlm:SPEC", "pkg.module:factory");
    `overrides` sets other `ThinkerConfig` fields (e.g. {"score_threshold": 9}). Raises
    `ConfigError` for a bad spec, before any editing.
    """
    from refine.config import validate_config
    from refine.thinker.config import ThinkerConfig, refiner_from_config

    data = {**(overrides or {}), "thinker": thinker, "max_turns": max_turns}
    if trace_dir is not None:
        data["trace_dir"] = str(trace_dir)
    config = validate_config(ThinkerConfig, data)
    printer = TurnPrinter(console)
    printer.header(thinker, max_turns)
    return compose(editor, refiner_from_config(config, observers=(printer,)))


def shapes_meta_for(image: Any, instruction: str) -> dict[str, Any]:
    """The request meta of the ShapeEdit case whose source image and instruction these are.

    `--thinker expert` needs the case's ground truth; from the shell the user gives an image and
    an instruction, so the case is found by matching both against every ShapeEdit split.

    Example:
        >>> from refine.shapes.data import load_split
        >>> case = load_split("shapes-bench")[7]
        >>> shapes_meta_for(case.source_image, case.instruction)["case_id"] == case.id
        True
    """
    from refine.errors import InputError
    from refine.images import load_image
    from refine.shapes.data import SPLITS, iter_cases

    pixels = load_image(image).tobytes()
    wanted = " ".join(instruction.split())
    for split in SPLITS:
        for case in iter_cases(split):
            if case.instruction == wanted and case.source_image.tobytes() == pixels:
                return case.to_request().meta
    raise InputError(
        f"--thinker expert needs a ShapeEdit case, and no ShapeEdit split ({', '.join(SPLITS)}) has a case with this image and the instruction "
        f"{instruction!r}; export one with `refine shapes` or use --thinker vlm:SPEC"
    )


def edit_with_thinker(backbone: Any, sampler: Any, request: Any, thinker: str, max_turns: int, out: str | Path, group: int = 1):
    """Run `refine edit`'s request through the thinker loop around a `FlowEditor(backbone, sampler)`.

    Prints each turn as it goes and writes the trace next to `out` (`default_trace_dir`).
    Returns (the kept image, the guidance the editor used).
    """
    from rich.console import Console

    from refine.errors import InputError
    from refine.rollout.flow_editor import FlowEditor

    if group != 1:
        raise InputError(f"--thinker edits one sample per turn; drop --group {group} (or use --group 1)")
    if thinker.strip() == "expert" and "shapes_case" not in request.meta:
        request.meta.update(shapes_meta_for(request.image, request.instruction))
    editor = FlowEditor(backbone, sampler=sampler)
    trace = default_trace_dir(out)
    console = Console(highlight=False)
    refined = wrap_with_thinker(editor, thinker, max_turns=max_turns, trace_dir=trace, console=console)
    [result] = refined.edit([request])
    console.print(f"trace: {trace}", markup=False, soft_wrap=True)  # never wrap a path
    return result.image, editor.guidance
