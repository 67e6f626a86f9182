"""Fixtures of the inline critic's tests: a tiny Qwen-Image MM-DiT and edit-forward inputs."""

import pytest

from refine._compat import ensure_torchvision_importable

ensure_torchvision_importable()


@pytest.fixture
def transformer():
    from refine.inline_critic.testing import tiny_qwen_transformer

    return tiny_qwen_transformer(num_layers=2)


@pytest.fixture
def inputs():
    from refine.inline_critic.testing import tiny_transformer_inputs

    return tiny_transformer_inputs(batch=2, text_len=6, padded=2)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run fastest on one thread (and the 2 cores are shared); restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny_shapes_backbone(layers: int = 2):
    from refine.backbones.shapes import build_shapes_backbone

    return build_shapes_backbone(layers=layers, width=32, heads=2, text_layers=1, seed=0)


@pytest.fixture
def tiny_shapes_backbone():
    """A builder of fresh tiny random ShapeEdit editors (2 blocks, width 32)."""
    return _tiny_shapes_backbone


@pytest.fixture(scope="session")
def three_stage_run(tmp_path_factory):
    """One tiny three-stage run on ShapeEdit (3 blocks, probes at 0 and 1) shared by the learning
    and analysis tests (~20 s)."""
    from refine.inline_critic.config import InlineCriticConfig
    from refine.inline_critic.train import train_inline_critic

    config = InlineCriticConfig(
        output_dir=str(tmp_path_factory.mktemp("critic")),
        num_probes=2,
        batch_size=8,
        progress=False,
        log_every=10,
        save_every=25,
        stage1={"steps": 30, "lr": 1e-2, "warmup_steps": 0},
        stage2={"steps": 50, "lr": 5e-3, "warmup_steps": 0},
        stage3={"steps": 30, "lr": 1e-2, "warmup_steps": 0},
        data={"validation_cases": 16},
    )
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # session fixtures start before the module-scoped _one_thread
    try:
        backbone = _tiny_shapes_backbone(layers=3)
        summary = train_inline_critic(config, backbone=backbone)
    finally:
        torch.set_num_threads(threads)
    return config, backbone, summary
