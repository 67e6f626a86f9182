"""Fixtures of the training-layer tests: a tiny editor, one intra-op thread."""

import pytest
import torch

from refine._compat import ensure_torchvision_importable

ensure_torchvision_importable()  # peft/diffusers import torchvision; see refine/_compat.py


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny models are 32 wide: a second intra-op thread only adds synchronisation."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_backbone():
    from refine.testing.edit_r1 import tiny_backbone as build

    return build()
