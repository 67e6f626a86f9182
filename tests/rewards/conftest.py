"""Fixtures for the reward tests: the tiny VLM and DINOv2, test images, a local fake server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import pytest
from PIL import Image, ImageDraw

from refine._compat import ensure_torchvision_importable
from refine.testing import tiny_dinov2_dir, tiny_vlm_dir

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


class FakeServer:
    """An OpenAI-style HTTP server on 127.0.0.1 answering with `respond(body) -> (status, json)`.

    Records every request body and the largest number of requests in flight at once.
    """

    def __init__(self, respond: Callable[[dict], tuple[int, dict]], delay: float = 0.0) -> None:
        self.respond = respond
        self.delay = delay
        self.models = ["served-model"]
        self.bodies: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                import time

                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.bodies.append(body)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    time.sleep(server.delay)
                    status, data = server.respond(body)
                finally:
                    with server._lock:
                        server.in_flight -= 1
                payload = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):  # noqa: N802 - GET /v1/models
                payload = json.dumps({"object": "list", "data": [{"id": m, "object": "model"} for m in server.models]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):  # keep test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_server():
    servers: list[FakeServer] = []

    def start(respond, delay: float = 0.0) -> FakeServer:
        servers.append(FakeServer(respond, delay))
        return servers[-1]

    yield start
    for server in servers:
        server.close()
