"""Fixtures for the reward tests: the tiny VLM and DINOv2, test images, a local fake server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from refine._compat import ensure_torchvision_importable
from refine.testing import tiny_dinov2_dir, tiny_vlm_dir
from refine.testing.stub_openai import FakeServer

ensure_torchvision_importable()

DATA = Path(__file__).parent / "data"


def load_fixture(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def scene(seed: int, size: int = 32) -> Image.Image:
    """A small deterministic picture: background colour and a shape that depend on `seed`."""
    colors = ["white", "red", "green", "blue", "yellow", "purple", "orange", "gray"]
    image = Image.new("RGB", (size, size), colors[seed % len(colors)])
    draw = ImageDraw.Draw(image)
    x = 2 + (seed * 5) % (size // 2)
    draw.ellipse([x, x // 2, x + size // 3, x // 2 + size // 3], fill=colors[(seed + 3) % len(colors)])
    return image


@pytest.fixture(scope="session")
def make_scene():
    """`make_scene(seed)`: a deterministic 32x32 test picture."""
    return scene


@pytest.fixture(scope="session")
def vllm_response():
    """`vllm_response(name)`: a JSON fixture from tests/rewards/data."""
    return load_fixture


@pytest.fixture(scope="session")
def tiny_vlm_path() -> Path:
    return tiny_vlm_dir("qwen2_5_vl")


@pytest.fixture(scope="session")
def local_vlm(tiny_vlm_path):
    from refine.rewards.backends.transformers_vlm import TransformersVLM

    return TransformersVLM(tiny_vlm_path, batch_size=32)


@pytest.fixture(scope="session")
def dinov2_path() -> Path:
    return tiny_dinov2_dir()


@pytest.fixture
def fake_server():
    servers: list[FakeServer] = []

    def start(respond, delay: float = 0.0) -> FakeServer:
        servers.append(FakeServer(respond, delay))
        return servers[-1]

    yield start
    for server in servers:
        server.close()
