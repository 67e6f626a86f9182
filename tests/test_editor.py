import pytest
from PIL import Image

from refine.editor import Editor, compose, is_white_box
from refine.errors import ConfigError, InputError
from refine.types import EditRequest, EditResult, Step


class BlackBoxEditor:
    def edit(self, requests):
        return [EditResult(r.image, r.instruction, steps=[Step("edit", "black")]) for r in requests]


class FakeFlowEditor(BlackBoxEditor):
    backbone = object()


class Tag:
    """Black-box refiner: appends a step and upper-cases the instruction."""

    name = "tag"

    def __call__(self, editor):
        parent = editor

        class Tagged:
            def edit(self, requests):
                out = parent.edit([EditRequest(r.image, r.instruction.upper(), r.seed, r.meta) for r in requests])
                for result in out:
                    result.steps.append(Step("tag", "tag"))
                return out

        return Tagged()


class Lora:
    """White-box refiner that keeps the editor white-box (like a LoRA loader)."""

    name = "lora"
    needs_white_box = True
    returns_white_box = True

    def __init__(self):
        self.seen = None

    def __call__(self, editor):
        self.seen = editor
        return editor


class Critic(Lora):
    name = "critic"
    returns_white_box = False


def _request():
    return EditRequest(Image.new("RGB", (8, 8)), "make it red")


def test_compose_applies_refiners_in_order():
    lora = Lora()
    refined = compose(FakeFlowEditor(), lora, Tag())
    results = refined.edit([_request()])
    assert isinstance(lora.seen, FakeFlowEditor)
    assert results[0].instruction == "MAKE IT RED"
    assert [s.kind for s in results[0].steps] == ["edit", "tag"]
    assert isinstance(refined, Editor)


def test_white_box_after_black_box_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match="place 'lora' before 'tag'"):
        compose(FakeFlowEditor(), Tag(), Lora())
    with pytest.raises(ConfigError, match="place 'lora' before 'critic'"):
        compose(FakeFlowEditor(), Critic(), Lora())
    with pytest.raises(ConfigError, match="base editor \\(BlackBoxEditor\\) is black-box"):
        compose(BlackBoxEditor(), Lora())
    # White-box refiners chained before black-box ones are fine.
    compose(FakeFlowEditor(), Lora(), Lora(), Critic(), Tag())


def test_compose_rejects_non_editors_and_non_refiners():
    with pytest.raises(ConfigError, match="needs an Editor"):
        compose(object())
    with pytest.raises(ConfigError, match="is not a Refiner"):
        compose(FakeFlowEditor(), 42)


def test_white_box_detection():
    assert is_white_box(FakeFlowEditor()) and not is_white_box(BlackBoxEditor())


def test_requests_validate_their_inputs(tmp_path):
    with pytest.raises(InputError, match="empty instruction"):
        EditRequest(Image.new("RGB", (4, 4)), "   ")
    path = tmp_path / "x.png"
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(path)
    request = EditRequest(path, " add a dot ")
    assert request.image.mode == "RGB" and request.instruction == "add a dot"


def test_step_serialises_without_its_image():
    step = Step("edit", "flow", "x", {"if": 1.0}, image=Image.new("RGB", (2, 2)), info={"turn": 1})
    data = step.to_json()
    assert "image" not in data and data["scores"] == {"if": 1.0} and data["info"] == {"turn": 1}
