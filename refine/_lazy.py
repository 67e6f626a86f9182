"""Lazy package exports: `from refine.edit_r1 import train` works, `import refine.edit_r1` stays cheap.

Example:
    >>> getattr_, names = lazy_exports("demo", {"dumps": "json"})
    >>> names, getattr_("dumps").__module__
    (['dumps'], 'json')
    >>> getattr_("loads")
    Traceback (most recent call last):
    ...
    AttributeError: module 'demo' has no attribute 'loads'

A package's `__init__` maps each public name to the module defining it and installs the module-level
`__getattr__` (PEP 562) this returns, so torch and friends load on first use, not on import (the CLI
and `refine --help` import the packages).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """(`__getattr__`, `__all__`) for `package` whose public names live in the modules `exports` maps them to."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    return __getattr__, sorted(exports)
