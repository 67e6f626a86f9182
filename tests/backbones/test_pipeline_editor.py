import numpy as np
import pytest
import torch
from PIL import Image

from refine._compat import ensure_torchvision_importable
from refine.backbones.pipeline_editor import PipelineEditor
from refine.editor import compose, is_white_box
from refine.errors import BackendError, ConfigError
from refine.testing.tiny_diffusers import tiny_flux_kontext_dir
from refine.types import EditRequest

ensure_torchvision_importable()  # diffusers' FLUX pipeline imports transformers' image processors

CALL = dict(num_inference_steps=2, height=32, width=32, max_area=32 * 32, _auto_resize=False, max_sequence_length=32)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pipeline():
    from diffusers import FluxKontextPipeline

    pipe = FluxKontextPipeline.from_pretrained(tiny_flux_kontext_dir())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def image(seed):
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray((torch.rand(32, 32, 3, generator=g) * 255).byte().numpy(), "RGB")


def test_pipeline_editor_calls_the_pipeline_with_each_requests_seed(pipeline):
    requests = [EditRequest(image(i), text, seed=7 + i, meta={"i": i}) for i, text in enumerate(["add a red circle", "make it blue"])]
    batched = PipelineEditor(pipeline, batch_size=2, **CALL).edit(requests)
    one_by_one = PipelineEditor(pipeline, **CALL).edit(requests)
    for request, a, b in zip(requests, batched, one_by_one):
        direct = pipeline(image=request.image, prompt=request.instruction, generator=torch.Generator().manual_seed(request.seed), **CALL).images[0]
        assert np.abs(np.asarray(a.image, dtype=int) - np.asarray(direct, dtype=int)).max() <= 1
        assert np.abs(np.asarray(b.image, dtype=int) - np.asarray(direct, dtype=int)).max() <= 1
        assert a.meta == request.meta and a.instruction == request.instruction
    step = batched[0].steps[0]
    assert (step.kind, step.source, step.info["seed"], step.info["num_inference_steps"]) == ("edit", "FluxKontextPipeline", 7, 2)
    assert step.seconds > 0


def test_pipeline_editor_is_black_box(pipeline):
    editor = PipelineEditor(pipeline, name="kontext", **CALL)
    assert not is_white_box(editor)

    class NeedsBackbone:
        needs_white_box = True

        def __call__(self, editor):
            return editor

    with pytest.raises(ConfigError, match="white-box"):
        compose(editor, NeedsBackbone())


def test_bad_call_arguments_are_refused_when_built(pipeline):
    with pytest.raises(ConfigError, match="did you mean 'num_inference_steps'"):
        PipelineEditor(pipeline, num_inference_step=2)
    with pytest.raises(ConfigError, match="sets \\['generator'\\] itself"):
        PipelineEditor(pipeline, generator=None)
    with pytest.raises(ConfigError, match="batch_size=0"):
        PipelineEditor(pipeline, batch_size=0)


def test_pipeline_failures_become_backend_errors():
    def broken(image, prompt, **kwargs):
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(BackendError, match="pipeline broken failed on 1 request\\(s\\): CUDA out of memory"):
        PipelineEditor(broken, name="broken").edit([EditRequest(image(0), "x")])
