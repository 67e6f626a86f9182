"""Fixtures for the ShapeEdit tests: the frozen splits, loaded once per session."""

import pytest

from refine.shapes.data import load_split


@pytest.fixture(scope="session")
def bench():
    return load_split("shapes-bench")


@pytest.fixture(scope="session")
def mt():
    return load_split("shapes-mt")
