"""The layers import downwards only: shared layers import no strategy or command, strategies not each other."""

import ast
from pathlib import Path

import refine

ROOT = Path(refine.__file__).parent
STRATEGIES = {"inline_critic", "thinker", "edit_r1", "multiturn"}
SHARED = {"backbones", "rollout", "rewards", "training", "shapes"}
ABOVE_SHARED = STRATEGIES | {"compare", "commands"}


def imported_packages(path: Path) -> set[str]:
    """refine.X of every `import refine.X...` / `from refine.X... import` in a file, lazy imports included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        found |= {name.split(".")[1] for name in names if name.startswith("refine.") and name.count(".") >= 1}
    return found


def test_shared_layers_never_reach_up():
    wrong = {
        f"{path.relative_to(ROOT)} imports refine.{package}"
        for layer in SHARED
        for path in (ROOT / layer).rglob("*.py")
        for package in imported_packages(path) & ABOVE_SHARED
    }
    assert not wrong, sorted(wrong)


def test_no_strategy_imports_another():
    wrong = {
        f"{path.relative_to(ROOT)} imports refine.{package}"
        for strategy in STRATEGIES if (ROOT / strategy).is_dir()
        for path in (ROOT / strategy).rglob("*.py")
        for package in imported_packages(path) & (STRATEGIES - {strategy})
    }
    assert not wrong, sorted(wrong)
