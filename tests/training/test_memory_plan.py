"""The memory plan: counts from the real configs on the meta device, and the arithmetic on top."""

from __future__ import annotations

import pytest

from refine.training.memory_plan import GIB, MemoryPlanInput, count_parameters, plan_memory


def test_parameter_counts_come_from_the_published_configs():
    qwen, qwen_lora = count_parameters("qwen_image_edit_2509", 64)
    flux, _ = count_parameters("flux_kontext", 64)
    # Qwen-Image's MM-DiT is the "20B" of its model card; FLUX.1's transformer is the "12B" one.
    assert 20.0e9 < qwen["transformer"] < 20.9e9 and 8.0e9 < qwen["text_encoder"] < 8.5e9
    assert 11.5e9 < flux["transformer"] < 12.2e9 and 4.6e9 < flux["text_encoder"] < 4.9e9
    # LoRA on the 8 attention projections of 60 blocks: r x (in + out) each, all 3072 wide.
    assert qwen_lora == 64 * (3072 + 3072) * 8 * 60


def test_fsdp_divides_the_sharded_items_and_not_the_activations():
    one = plan_memory(MemoryPlanInput(model="qwen_image_edit_2509", finetune="full", gpus=8, fsdp=False))
    eight = plan_memory(MemoryPlanInput(model="qwen_image_edit_2509", finetune="full", gpus=8, fsdp=True))
    rows_one, rows_eight = {r[0]: r[1] for r in one.rows}, {r[0]: r[1] for r in eight.rows}
    for item in ("transformer weights (bf16)", "trainable: fp32 master + grad + Adam", "shadows: old policy + EMA (fp32)"):
        assert rows_eight[item] == pytest.approx(rows_one[item] / 8)
    assert rows_eight["activations x micro-batch 1"] == rows_one["activations x micro-batch 1"]
    # Full fine-tuning of 20B parameters cannot fit replicated (16 B a parameter is 300 GiB) but fits sharded.
    assert not one.fits and eight.fits
    assert rows_one["trainable: fp32 master + grad + Adam"] == pytest.approx(16 * one.params["transformer"] / GIB)


def test_checkpointing_and_cfg_branches_scale_the_activations():
    plain = plan_memory(MemoryPlanInput(model="flux_kontext", resolution=1024, activation_checkpointing=False))
    ckpt = plan_memory(MemoryPlanInput(model="flux_kontext", resolution=1024, activation_checkpointing=True))
    both = plan_memory(MemoryPlanInput(model="flux_kontext", resolution=1024, cfg_branches=2))
    tokens, width, blocks = 2 * 64 * 64 + 256, 3072, 57
    assert plain.activation_gib_per_sample == pytest.approx(34 * tokens * width * blocks / GIB)
    assert ckpt.activation_gib_per_sample == pytest.approx((2 * blocks + 34) * tokens * width / GIB)
    assert both.activation_gib_per_sample == pytest.approx(2 * ckpt.activation_gib_per_sample)
    # The largest micro-batch is what is left after the fixed items, in whole samples.
    fixed = ckpt.total_gib - ckpt.activation_gib_per_sample
    assert ckpt.max_micro_batch == int((80 - fixed) // ckpt.activation_gib_per_sample)
    assert "largest micro-batch that fits: " in ckpt.summary()


def test_dry_run_prints_the_plan_of_the_resolved_config_and_trains_nothing(monkeypatch, capsys):
    import refine.edit_r1.train as edit_r1_train
    from refine.cli import main

    def no_training(*args, **kwargs):
        raise AssertionError("--dry-run must not train")

    monkeypatch.setattr(edit_r1_train, "train", no_training)
    main(["train", "edit-r1", "--config", "edit_r1/qwen_image_edit_2509", "--dry-run", "--gpus", "48", "train.finetune=full"])
    out = capsys.readouterr().out
    assert "qwen_image_edit_2509, full, 48 GPUs x 80 GiB, 512px" in out
    assert "transformer 20.43B" in out and "largest micro-batch that fits" in out
    main(["train", "edit-r1", "--config", "edit_r1/shapes", "--dry-run"])
    assert "no memory plan for backbone kind 'shapes'" in capsys.readouterr().out
