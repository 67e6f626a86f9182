"""Typed errors: every failure a user can cause has a class, and the CLI turns them into one line.

Example:
    >>> from refine.errors import InputError
    >>> try:
    ...     raise InputError("cat.png: not an image (truncated PNG data)")
    ... except InputError as err:
    ...     print(err)
    cat.png: not an image (truncated PNG data)

`RefineError` subclasses are the only exceptions the CLI catches to print a one-line message and
exit 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class RefineError(Exception):
    """Base class of the errors a user can fix (bad input, bad config, unreachable backend)."""


class InputError(RefineError, ValueError):
    """An input (image, instruction, file, folder) cannot be used; the message names it and why."""


class ConfigError(RefineError, ValueError):
    """A config or component spec is invalid; the message names the key and how to fix it."""


class BackendError(RefineError, RuntimeError):
    """A model backend or server failed (unreachable, refused, missing capability)."""


class ArtifactError(RefineError, FileNotFoundError):
    """A trained artifact (weights, adapter, critic) is missing or does not match its backbone."""
