import numpy as np
import pytest

from refine.editor import compose, is_white_box
from refine.errors import ConfigError, InputError
from refine.rollout.flow_editor import FlowEditor
from refine.types import EditRequest


def pixels(image):
    return np.asarray(image, dtype=int)


def test_flow_editor_is_a_batched_white_box_editor(toy, random_image):
    editor = FlowEditor(toy, sampler="euler", steps=4, batch_size=2)
    assert is_white_box(editor) and editor.backbone is toy
    requests = [EditRequest(random_image(i), f"make it {i} shades darker", seed=i, meta={"id": i}) for i in range(3)]
    results = editor.edit(requests)
    assert [r.meta["id"] for r in results] == [0, 1, 2]
    assert max(toy.calls) == 2  # batch_size bounds each forward pass
    step = results[0].steps[0]
    assert (step.kind, step.source, step.instruction) == ("edit", "toy", "make it 0 shades darker")
    assert step.seconds > 0 and step.info == {"sampler": "euler", "steps": 4, "guidance": None, "seed": 0}
    assert results[0].image.size == (8, 8) and step.image is results[0].image


def test_seed_decides_the_result_not_the_batch(toy, random_image):
    editor = FlowEditor(toy, sampler="sde", steps=4, batch_size=4)
    request = EditRequest(random_image(0), "add noise", seed=11)
    alone = editor.edit([request])[0]
    together = editor.edit([EditRequest(random_image(5), "other", seed=3), request])[1]
    assert np.abs(pixels(alone.image) - pixels(together.image)).max() <= 1
    other_seed = editor.edit([EditRequest(random_image(0), "add noise", seed=12)])[0]
    assert np.abs(pixels(alone.image) - pixels(other_seed.image)).max() > 1


def test_missing_seed_is_drawn_and_recorded(toy, random_image):
    result = FlowEditor(toy, steps=2).edit([EditRequest(random_image(0), "brighten")])[0]
    assert isinstance(result.steps[0].info["seed"], int)


def test_guidance_defaults_to_the_backbone_and_can_be_overridden(toy_cfg, random_image):
    request = EditRequest(random_image(0), "brighten", seed=0)
    default = FlowEditor(toy_cfg, steps=2).edit([request])[0]
    assert default.steps[0].info["guidance"] == 3.0
    weaker = FlowEditor(toy_cfg, steps=2, guidance=1.5).edit([request])[0]
    assert weaker.steps[0].info["guidance"] == 1.5
    assert np.abs(pixels(default.image) - pixels(weaker.image)).max() > 1


def test_compose_accepts_a_flow_editor_for_white_box_refiners(toy):
    class Critic:
        needs_white_box = True
        returns_white_box = True

        def __call__(self, editor):
            assert editor.backbone is toy
            return editor

    assert compose(FlowEditor(toy), Critic()).backbone is toy


def test_bad_settings(toy):
    with pytest.raises(InputError, match="batch_size=0"):
        FlowEditor(toy, batch_size=0)
    with pytest.raises(ConfigError, match="name"):
        FlowEditor(toy, sampler="heun")
    with pytest.raises(ConfigError, match="steps"):
        FlowEditor(toy, steps=0)
    assert FlowEditor(toy).edit([]) == []
