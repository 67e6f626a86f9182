"""Fixtures for the backbone tests: a tiny ShapeEdit editor over the real ShapeEdit vocabulary."""

import pytest


@pytest.fixture
def tiny_backbone():
    from refine.backbones.shapes import build_shapes_backbone

    return build_shapes_backbone(layers=1, width=32, heads=2, text_layers=1, seed=0).eval()


@pytest.fixture(scope="module")
def bench_images():
    """Four shapes-bench cases (source images, instructions) of different categories."""
    from refine.shapes.data import load_split

    cases = load_split("shapes-bench")[::135]
    return [c.source_image for c in cases], [c.instruction for c in cases]
