"""Fixtures for comparison tests: the toy world of refine.testing.compare_fakes, counters reset."""

import pytest

from refine.testing.compare_fakes import PaintEditor, toy_config


@pytest.fixture(autouse=True)
def _reset_paint_editor():
    PaintEditor.calls = 0
    PaintEditor.interrupt_after = None
    PaintEditor.seen = []
    yield
    PaintEditor.calls = 0
    PaintEditor.interrupt_after = None


@pytest.fixture
def toy(tmp_path):
    """A function building a toy compare config dict writing under tmp_path/<name>."""

    def make(name: str = "run", **kwargs):
        return toy_config(tmp_path / name, **kwargs)

    return make
