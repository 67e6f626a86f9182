"""Top-level commands that compose several layers and strategies (`refine edit`).

Example:
    >>> from refine.cli import COMMANDS
    >>> COMMANDS["edit"]
    'refine.commands.edit:edit'

Why a package of its own: `refine edit` can put a thinker (a strategy) around a backbone's editor.
Kept in `refine/rollout/`, it made a shared layer import a strategy. Here nothing below reaches
up: shared layers (backbones, rollout, rewards, training) import no command and no strategy, and
a strategy's own command stays in its folder (`refine train edit-r1` in `refine/edit_r1/train.py`).
"""
