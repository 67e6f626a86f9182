"""The Editor and Refiner protocols, and `compose`, which stacks refiners around an editor.

Example:
    >>> from PIL import Image
    >>> from refine.editor import compose
    >>> from refine.types import EditRequest, EditResult
    >>> class Identity:                          # the smallest Editor: returns the source image
    ...     def edit(self, requests):
    ...         return [EditResult(r.image, r.instruction) for r in requests]
    >>> class Shout:                             # a black-box Refiner: wraps any Editor
    ...     name = "shout"
    ...     def __call__(self, editor):
    ...         class Loud:
    ...             def edit(self, requests):
    ...                 return editor.edit([EditRequest(r.image, r.instruction.upper()) for r in requests])
    ...         return Loud()
    >>> out = compose(Identity(), Shout()).edit([EditRequest(Image.new("RGB", (8, 8)), "recolor it")])
    >>> out[0].instruction
    'RECOLOR IT'

Two kinds of editors exist. Any object with `edit(requests) -> results` is an `Editor` (a diffusers
pipeline wrapper, an HTTP service, an already refined editor). A `WhiteBoxEditor` additionally
exposes its flow-matching `backbone` (see `refine.backbones.base.FlowBackbone`): the inline critic
installs a token into that backbone's transformer, Edit-R1 / MT-EditFlow load LoRA adapters into it.
A refiner declares `needs_white_box = True` when it must reach inside; `compose` then refuses to
place it after a refiner whose output hides the backbone.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from refine.errors import ConfigError
from refine.types import EditRequest, EditResult


@runtime_checkable
class Editor(Protocol):
    """Anything that edits a batch of requests. Results come back in request order."""

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]: ...


@runtime_checkable
class WhiteBoxEditor(Editor, Protocol):
    """An Editor whose flow-matching backbone white-box refiners may modify (e.g. `FlowEditor`)."""

    backbone: object


@runtime_checkable
class Refiner(Protocol):
    """Turns an editor into a refined editor. Optional attributes read by `compose`:

    * `name` (str): used in traces and error messages;
    * `needs_white_box` (bool, default False): the refiner needs a `WhiteBoxEditor` input.
    """

    def __call__(self, editor: Editor) -> Editor: ...


def is_white_box(editor: object) -> bool:
    """True when `editor` exposes a backbone that white-box refiners can act on."""
    return isinstance(editor, WhiteBoxEditor) and getattr(editor, "backbone", None) is not None


def refiner_name(refiner: object) -> str:
    return getattr(refiner, "name", None) or type(refiner).__name__


def compose(editor: Editor, *refiners: Refiner) -> Editor:
    """Apply `refiners` to `editor` in order (the first wraps the editor, the last is outermost).

    Raises `ConfigError` before building anything when the order cannot work: a refiner that needs
    a white-box flow editor placed after one that returns a black-box editor. The message names
    both refiners and the order that would work.
    """
    if not isinstance(editor, Editor):
        raise ConfigError(f"compose() needs an Editor (an object with .edit(requests)), got {type(editor).__name__}")
    _check_order(editor, refiners)
    current: Editor = editor
    for refiner in refiners:
        current = refiner(current)
        if not isinstance(current, Editor):
            raise ConfigError(f"refiner {refiner_name(refiner)!r} returned {type(current).__name__}, which is not an Editor")
    return current


def _check_order(editor: Editor, refiners: Sequence[Refiner]) -> None:
    white_box = is_white_box(editor)
    hidden_by: str | None = None if white_box else f"the base editor ({type(editor).__name__})"
    for refiner in refiners:
        if not callable(refiner):
            raise ConfigError(f"{refiner!r} is not a Refiner (it must be callable: editor -> editor)")
        name = refiner_name(refiner)
        if getattr(refiner, "needs_white_box", False) and not white_box:
            if hidden_by is not None and hidden_by.startswith("the base editor"):
                raise ConfigError(
                    f"refiner {name!r} needs a white-box flow editor (a FlowEditor exposing its backbone), "
                    f"but {hidden_by} is black-box; use a FlowEditor as the base"
                )
            raise ConfigError(
                f"refiner {name!r} needs a white-box flow editor, but {hidden_by} returns a black-box editor; "
                f"place {name!r} before {hidden_by!r}"
            )
        # A refiner that keeps the backbone visible says so with `returns_white_box = True`
        # (e.g. LoRA loaders return a FlowEditor); the default is black-box, the safe assumption.
        if white_box and not getattr(refiner, "returns_white_box", False):
            white_box, hidden_by = False, name
