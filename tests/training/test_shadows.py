"""Old policy / EMA shadows, the decay schedule and the reference policy."""

import pytest
import torch

from refine.training.shadows import ShadowWeights, adapters_disabled, decay_at
from refine.training.policies import setup_policies


def test_decay_schedule_ramps_then_holds():
    assert [decay_at(k, flat=2, rate=0.2, maximum=0.5) for k in range(7)] == [0.0, 0.0, 0.0, 0.2, 0.4, 0.5, 0.5]
    assert decay_at(10**6) == 0.5  # the defaults cap at 0.5


def test_shadow_follows_with_decay_and_swaps_back_exactly():
    layer = torch.nn.Linear(3, 2)
    params = list(layer.parameters())
    trained = [p.detach().clone() for p in params]
    shadow = ShadowWeights(params)
    with torch.no_grad():
        for p in params:
            p.add_(1.0)
    shadow.update_(params, decay=0.75)  # shadow = 0.75 old + 0.25 new = old + 0.25
    assert all(torch.allclose(s, t + 0.25) for s, t in zip(shadow.tensors, trained))
    before = [p.detach().clone() for p in params]
    x = torch.randn(4, 3)
    with shadow.swapped_into(params):
        assert torch.allclose(layer(x), torch.nn.functional.linear(x, shadow.tensors[0], shadow.tensors[1]))
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    with pytest.raises(RuntimeError), shadow.swapped_into(params):
        raise RuntimeError("even on errors the trained weights come back")
    assert all(torch.equal(p, b) for p, b in zip(params, before))


def test_swapping_keeps_optimizer_state_attached():
    layer = torch.nn.Linear(2, 1)
    params = list(layer.parameters())
    optimizer = torch.optim.Adam(params, lr=0.1)
    layer(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    shadow = ShadowWeights(params)
    with shadow.swapped_into(params):
        pass
    layer(torch.ones(1, 2)).sum().backward()
    optimizer.step()  # the optimizer state is keyed by the parameter objects, which never changed
    assert all(p in optimizer.state for p in params)


def test_lora_policies_start_equal_and_reference_is_the_base_model(tiny_backbone):
    state = setup_policies(tiny_backbone, finetune="lora", lora_rank=4, kl=True)
    assert all("lora_" in n for n in state.names)
    assert not any(p.requires_grad for p in tiny_backbone.text_encoder.parameters())
    cond = tiny_backbone.encode_condition([_white()], ["add a red circle"], guidance=1.0)
    x, t = torch.randn(1, 64, 48, generator=torch.Generator().manual_seed(0)), torch.tensor([0.5])
    base = tiny_backbone.velocity(x, t, cond)
    with torch.no_grad():
        for name, p in zip(state.names, state.params):
            if "lora_B" in name:
                p.normal_()  # the trained policy moves away from the base model
    trained = tiny_backbone.velocity(x, t, cond)
    with state.reference_context()():
        reference = tiny_backbone.velocity(x, t, cond)
    with state.old.swapped_into(state.params):
        old = tiny_backbone.velocity(x, t, cond)
    assert not torch.allclose(trained, base, atol=1e-4)
    assert torch.allclose(reference, base, atol=1e-6) and torch.allclose(old, base, atol=1e-6)


def test_full_finetuning_reference_is_the_initial_weights(tiny_backbone):
    state = setup_policies(tiny_backbone, finetune="full", kl=True)
    assert state.reference_kind == "initial_weights"
    assert len(state.params) == len(list(tiny_backbone.transformer.parameters()))
    initial = [p.detach().clone() for p in state.params]
    with torch.no_grad():
        state.params[0].add_(1.0)
    with state.reference_context()():
        assert torch.equal(state.params[0], initial[0])
    assert not torch.equal(state.params[0], initial[0])


def test_adapters_disabled_is_a_no_op_without_adapters():
    layer = torch.nn.Linear(1, 1)
    with adapters_disabled(layer):
        assert layer(torch.ones(1, 1)).shape == (1, 1)


def _white():
    from PIL import Image

    return Image.new("RGB", (32, 32), "white")


@pytest.fixture
def one_process_group(tmp_path):
    """A gloo process group of one process, so that `fully_shard` (FSDP2) can run in the test process."""
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group already exists in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_shadows_of_fsdp2_shards_run_the_sharded_model_and_restore_it_exactly(one_process_group):
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    reference = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    reference.load_state_dict(model.state_dict())
    fully_shard(model[0])
    fully_shard(model)
    params = list(model.parameters())
    assert all(isinstance(p, DTensor) for p in params)
    old = ShadowWeights(params, owner=model)  # built after sharding: shards, not DTensors
    assert old.sharded and not any(isinstance(t, DTensor) for t in old.tensors)
    with torch.no_grad():
        for p in params:
            p.to_local().add_(1.0)  # the trained policy moves on
    x = torch.randn(5, 3)
    trained = model(x).detach()
    with old.swapped_into(params):  # the forward all-gathers the old values: the storage FSDP2 owns was updated
        assert torch.allclose(model(x), reference(x))
    assert torch.equal(model(x).detach(), trained)
    # The checkpoint view wraps the shards back into DTensors that share their storage.
    state = old.sharded_state([str(i) for i in range(len(params))])
    assert all(isinstance(v, DTensor) and v.shape == p.shape for v, p in zip(state.values(), params))
    state["0"].to_local().zero_()
    assert float(old.tensors[0].abs().sum()) == 0.0
