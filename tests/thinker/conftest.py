"""Small fake editors and thinkers for the loop tests (no model, deterministic, instant)."""

from __future__ import annotations

import pytest
from PIL import Image

from refine.thinker.protocol import Thought
from refine.types import EditRequest, EditResult, Step

COLORS = {"paint it red": (255, 0, 0), "paint it blue": (0, 0, 255), "paint it green": (0, 128, 0)}


class ColorEditor:
    """Fills the image with the colour its instruction names exactly; anything else gives gray.

    Records every batch it was called with, so tests can check per-turn batching and seeds.
    """

    def __init__(self):
        self.batches: list[list[EditRequest]] = []

    def edit(self, requests):
        self.batches.append(list(requests))
        out = []
        for r in requests:
            color = COLORS.get(r.instruction, (128, 128, 128))
            out.append(EditResult(Image.new("RGB", r.image.size, color), r.instruction, steps=[Step("edit", "color", r.instruction)]))
        return out


class ScriptedThinker:
    """Scores the edit (10 if it has the wanted colour, else `miss_score`) and proposes the next
    instruction from a per-request script (`meta["script"]`, one entry per turn)."""

    name = "scripted"

    def __init__(self, miss_score: float = 2.0, stop_flag: bool = False):
        self.batches: list[list] = []
        self.miss_score = miss_score
        self.stop_flag = stop_flag

    def think(self, requests):
        self.batches.append(list(requests))
        thoughts = []
        for r in requests:
            if r.edited is None:  # think before edit
                thoughts.append(Thought(r.meta["script"][0], "rewrite first"))
                continue
            hit = r.edited.getpixel((0, 0)) == COLORS[r.meta["want"]]
            script = r.meta["script"]
            nxt = script[min(r.turn - 1, len(script) - 1)]
            scores = {"semantic": 10.0 if hit else self.miss_score, "quality": 9.0}
            stop = hit if self.stop_flag else None
            thoughts.append(Thought(nxt, f"turn {r.turn}: {'right' if hit else 'wrong'} colour", scores, stop=stop))
        return thoughts


class GarbageThinker:
    """Returns unparseable text every time, like a random-weight model."""

    name = "garbage"

    def __init__(self):
        self.calls = 0

    def think(self, requests):
        from refine.thinker.protocol import thought_from_text

        self.calls += 1
        return [thought_from_text("ĠtheĠ blue<|im_end|> ? circle") for _ in requests]


def make_request(want="paint it red", script=("paint it red",), instruction="make it look like a tomato", seed=7):
    return EditRequest(Image.new("RGB", (8, 8), "white"), instruction, seed=seed, meta={"want": want, "script": list(script)})


@pytest.fixture
def editor():
    return ColorEditor()


@pytest.fixture
def scripted():
    return ScriptedThinker


@pytest.fixture
def garbage():
    return GarbageThinker()


@pytest.fixture
def request_for():
    return make_request


@pytest.fixture(scope="session")
def tiny_vlm_path():
    from refine.testing.tiny_vlm import tiny_vlm_dir

    return tiny_vlm_dir("qwen2_5_vl")


@pytest.fixture(scope="session")
def tiny_vlm_backend(tiny_vlm_path):
    import torch

    from refine.rewards.backends.transformers_vlm import TransformersVLM

    torch.manual_seed(0)
    return TransformersVLM(tiny_vlm_path)


@pytest.fixture(scope="session")
def served_tiny_vlm(tiny_vlm_path, tmp_path_factory):
    """(base_url, model) of `transformers serve` running the tiny VLM on a free 127.0.0.1 port."""
    from refine.testing.serve import transformers_serve

    with transformers_serve(tiny_vlm_path, log_path=tmp_path_factory.mktemp("serve") / "server.log") as server:
        yield server
