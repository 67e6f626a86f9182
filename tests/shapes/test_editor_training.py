"""Base training of the ShapeEdit editor: it learns, it resumes exactly, its checkpoints are atomic."""

import json
import shutil
from itertools import islice

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from refine.backbones.shapes import ShapesBackbone, build_word_tokenizer
from refine.errors import ArtifactError, ConfigError
from refine.shapes.editor_training.config import BaseTrainConfig
from refine.shapes.editor_training.data import ShapesBatches
from refine.shapes.editor_training.objective import edited_pixel_mask, flow_matching_loss, one_step_errors, source_object_mask, validation_loss
from refine.shapes.editor_training.train import find_checkpoint, train
from refine.training.checkpoint import list_checkpoints, read_json, read_tensors, read_torch

TINY = {"layers": 1, "width": 32, "heads": 2, "text_layers": 1}


def tiny_config(tmp_path, **overrides):
    data = dict(
        output_dir=str(tmp_path), model=TINY, batch_size=4, max_steps=4, warmup_steps=0, learning_rate=2e-3,
        lr_scheduler="constant",
        eval={"every": 0}, checkpoint_every=0, log_every=1, save_dtype="float32", progress=False, num_threads=1,
    )
    data.update(overrides)
    return BaseTrainConfig.model_validate(data)


def fixed_batch(backbone, n=8, seed=123):
    """A fixed batch of real ShapeEdit cases, with fixed times and noise."""
    from refine.shapes.data import training_stream

    cases = list(islice(training_stream(seed), n))
    to_pixels = lambda images: torch.from_numpy(np.stack([np.asarray(i) for i in images])).permute(0, 3, 1, 2).float() / 255
    ids, mask = backbone.tokenize([c.instruction for c in cases])
    g = torch.Generator().manual_seed(seed)
    return (to_pixels([c.source_image for c in cases]), to_pixels([c.target_image for c in cases]), ids, mask,
            torch.rand(n, generator=g), torch.randn(n, 64, 48, generator=g))


def loss_of(backbone, batch):
    with torch.no_grad():
        return flow_matching_loss(backbone.eval(), *batch).item()


@pytest.mark.slow
def test_short_training_lowers_the_flow_matching_loss(tmp_path):
    config = tiny_config(tmp_path, max_steps=40, batch_size=8, ema_decay=0.9)
    from refine.backbones.shapes import build_shapes_backbone

    initial = build_shapes_backbone(**TINY, seed=config.seed)  # what train() starts from
    batch = fixed_batch(initial)
    before = loss_of(initial, batch)
    summary = train(config)
    after = loss_of(ShapesBackbone.from_pretrained(summary["final_dir"]), batch)
    assert after < 0.75 * before, (before, after)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 40 and np.mean(losses[-10:]) < np.mean(losses[:10])


def test_resume_reaches_the_state_of_an_uninterrupted_run(tmp_path):
    # The learning rate decays across the resume point, so the schedule's state must come back too.
    schedule = dict(lr_scheduler="warmup_stable_decay", decay_steps=3, checkpoint_every=2, keep_checkpoints=2)
    train(tiny_config(tmp_path / "straight", **schedule))
    # An interrupted run: only the step-2 checkpoint survived; resume it to the same end.
    resumed_dir = tmp_path / "resumed" / "checkpoints"
    resumed_dir.mkdir(parents=True)
    shutil.copytree(tmp_path / "straight" / "checkpoints" / "checkpoint-000002", resumed_dir / "checkpoint-000002")
    train(tiny_config(tmp_path / "resumed", resume_from="latest", **schedule))
    a_dir, b_dir = (tmp_path / run / "checkpoints" / "checkpoint-000004" for run in ("straight", "resumed"))
    for name in ("model", "ema"):
        a, b = read_tensors(a_dir, name), read_tensors(b_dir, name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}:{key} differs after resume"
    opt_a, opt_b = read_torch(a_dir, "optimizer"), read_torch(b_dir, "optimizer")
    assert opt_a["param_groups"] == opt_b["param_groups"]
    for index in opt_a["state"]:
        for key, value in opt_a["state"][index].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(opt_b["state"][index][key])), f"optimizer {index}.{key}"
    assert read_torch(a_dir, "scheduler") == read_torch(b_dir, "scheduler")
    rng_a, rng_b = read_torch(a_dir, "rng-rank0"), read_torch(b_dir, "rng-rank0")
    assert torch.equal(rng_a["torch"], rng_b["torch"]) and torch.equal(rng_a["generators"]["train"], rng_b["generators"]["train"])
    assert read_json(a_dir, "state")["step"] == read_json(b_dir, "state")["step"] == 4
    # The resumed run logged the steps it did, after the step it resumed from.
    logs = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    straight_logs = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == [3, 4]
    assert [(r["loss"], r["lr"]) for r in logs] == [(r["loss"], r["lr"]) for r in straight_logs[2:]]
    assert straight_logs[1]["lr"] > straight_logs[3]["lr"]


def test_a_resume_refuses_a_changed_config_and_accepts_more_steps(tmp_path):
    train(tiny_config(tmp_path, max_steps=2, checkpoint_every=1))
    saved = (tmp_path / "config.yaml").read_text()
    with pytest.raises(ConfigError) as caught:
        train(tiny_config(tmp_path, max_steps=2, checkpoint_every=1, learning_rate=0.5, resume_from="latest"))
    assert "\n" not in str(caught.value) and "learning_rate 0.002 -> 0.5" in str(caught.value)
    assert (tmp_path / "config.yaml").read_text() == saved
    with pytest.raises(ConfigError, match="max_steps=1 but the run .* has already done 2"):
        train(tiny_config(tmp_path, max_steps=1, checkpoint_every=1, resume_from="latest"))
    summary = train(tiny_config(tmp_path, max_steps=3, checkpoint_every=1, resume_from="latest"))
    assert summary["step"] == 3 and "max_steps: 3" in (tmp_path / "config.yaml").read_text()


def test_model_qk_norm_init_reaches_the_built_editor(tmp_path):
    summary = train(tiny_config(tmp_path, max_steps=1, model={**TINY, "qk_norm_init": 2.5}))
    gains = ShapesBackbone.from_pretrained(summary["final_dir"]).transformer.transformer_blocks[0].attn.norm_q.weight
    assert torch.allclose(gains, torch.full_like(gains, 2.5), atol=0.01)  # one Adam step moves a gain by ~lr
    from refine.config import validate_config

    with pytest.raises(ConfigError, match="qk_norm_init"):
        validate_config(BaseTrainConfig, {"model": {"qk_norm_init": 0}})


def test_evaluation_logs_judge_scores_and_a_held_out_loss(tmp_path):
    from refine.shapes.data import load_split

    config = tiny_config(tmp_path, eval={"every": 2, "loss_cases": 8, "steps": 2, "guidance": 1.0})
    summary = train(config, eval_cases=load_split("shapes-val")[:3])
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert all(r["eval"]["n"] == 3 and 0 <= r["eval"]["overall"] <= 1 for r in evals)
    # val_loss is the EMA editor's loss on a fixed held-out batch: recomputable from the exported weights.
    final = ShapesBackbone.from_pretrained(summary["final_dir"])
    held_out = ShapesBatches(config.seed + 1_000_003, 8, final.tokenizer, config.indirect_fraction)[0]
    assert evals[-1]["eval"]["val_loss"] == pytest.approx(validation_loss(final, held_out), rel=1e-5)
    assert evals[0]["eval"]["val_loss"] != evals[-1]["eval"]["val_loss"]
    # So are the one-step errors at t = 1 on the edited and the kept pixels.
    errors = one_step_errors(final, held_out)
    assert evals[-1]["eval"]["edit_error"] == pytest.approx(errors["edit_error"], rel=1e-5)
    assert evals[-1]["eval"]["copy_error"] == pytest.approx(errors["copy_error"], rel=1e-5)


class _Oracle(torch.nn.Module):
    """An editor whose one-step x0 estimate at t = 1 is exactly `answer(source)` (a copier, or the target)."""

    latent_shape = (64, 48)
    device = torch.device("cpu")

    def __init__(self, answer):
        super().__init__()
        self.answer = answer

    def forward(self, x_t, t, source_latents, ids, mask):
        return x_t - self.answer(source_latents)  # v = x_1 - x0 at t = 1


def test_one_step_errors_separate_edited_from_kept_pixels():
    from refine.backbones.shapes import build_word_tokenizer, pack_pixels
    from refine.shapes.instructions import VOCABULARY

    batch = ShapesBatches(seed=5, batch_size=16, tokenizer=build_word_tokenizer(VOCABULARY))[0]
    target = pack_pixels(torch.from_numpy(batch["target"]).float() / 255)
    copier = one_step_errors(_Oracle(lambda source: source), batch)
    assert copier["copy_error"] == pytest.approx(0.0, abs=1e-6) and copier["edit_error"] > 0.3
    perfect = one_step_errors(_Oracle(lambda source: target), batch)
    assert perfect == pytest.approx({"edit_error": 0.0, "copy_error": 0.0}, abs=1e-6)


def test_checkpoints_are_found_only_when_complete(tmp_path):
    from refine.training.checkpoint import COMPLETE

    with pytest.raises(ArtifactError, match="no checkpoint"):
        find_checkpoint(tmp_path, "latest")
    root = tmp_path / "checkpoints"
    (root / ".tmp-checkpoint-000009").mkdir(parents=True)  # a crash mid-write
    (root / "checkpoint-000003").mkdir()
    (root / "checkpoint-000003" / COMPLETE).write_text("3\n")
    (root / "checkpoint-000005").mkdir()  # no COMPLETE marker: incomplete
    assert find_checkpoint(tmp_path, "latest").name == "checkpoint-000003"
    assert [p.name for p in list_checkpoints(root)] == ["checkpoint-000003"]
    with pytest.raises(ArtifactError, match="not a complete checkpoint"):
        find_checkpoint(tmp_path, str(root / "checkpoint-000005"))


def test_batches_are_a_pure_function_of_seed_and_index():
    tokenizer = build_word_tokenizer(["make", "the", "red"], 32)
    batches = ShapesBatches(seed=0, batch_size=3, tokenizer=tokenizer, indirect_fraction=0.5)
    later, first, again = batches[5], batches[0], batches[5]
    assert later["source"].shape == (3, 3, 32, 32) and later["source"].dtype == np.uint8
    assert later["ids"].shape == later["mask"].shape == (3, 32)
    for key in later:
        assert np.array_equal(later[key], again[key])
    assert not np.array_equal(later["target"], first["target"])
    assert not np.array_equal(later["source"], later["target"])  # an edit happened


def test_config_rules_and_cli_errors(tmp_path):
    from typer.testing import CliRunner

    from refine.cli import app, main

    with pytest.raises(ConfigError, match="head size"):
        from refine.config import validate_config

        validate_config(BaseTrainConfig, {"model": {"width": 128, "heads": 3}})
    result = CliRunner().invoke(app, ["config", "show", "base/shapes", "max_steps=3000"])
    assert result.exit_code == 0 and "max_steps: 3000" in result.output
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "base", "--config", "base/shapes", f"output_dir={tmp_path}", "--resume"])
    assert exit_info.value.code == 2


def squared_velocity_error(backbone, source, target, ids, mask, t, noise):
    """Per-element squared error of the velocity, written out by hand: what the weighted losses reduce."""
    from refine.backbones.shapes import pack_pixels

    x0 = pack_pixels(target)
    x_t = (1 - t.view(-1, 1, 1)) * x0 + t.view(-1, 1, 1) * noise
    return (backbone(x_t, t, pack_pixels(source), ids, mask) - (noise - x0)) ** 2


def packed_mask(mask, like):
    """(B, 1, H, W) bool -> (B, N, C) float in {0, 1}, laid out like the packed latents of `like`."""
    from refine.backbones.shapes import pack_pixels

    return (pack_pixels(mask.expand_as(like).float()) > 0).float()


def test_object_weight_scales_the_loss_on_the_source_objects_only():
    from refine.backbones.shapes import build_shapes_backbone
    backbone = build_shapes_backbone(layers=1, width=32, heads=2, seed=0).eval()
    source, target, ids, mask, t, noise = fixed_batch(backbone, n=4)
    objects = source_object_mask(source)  # (B, 1, H, W)
    # the background is each image's most common colour; its objects are what is left (here 2-25% of the pixels)
    assert 0.02 < objects.float().mean() < 0.25
    with torch.no_grad():
        squared = squared_velocity_error(backbone, source, target, ids, mask, t, noise)
        weight = 1 + 4 * packed_mask(objects, source)
        by_hand = float((weight * squared).sum() / weight.sum())
        assert flow_matching_loss(backbone, source, target, ids, mask, t, noise, object_weight=5.0).item() == pytest.approx(by_hand, rel=1e-5)
        assert flow_matching_loss(backbone, source, target, ids, mask, t, noise).item() == pytest.approx(float(squared.mean()), rel=1e-5)
    with pytest.raises(ConfigError, match="object_weight"):
        from refine.config import validate_config

        validate_config(BaseTrainConfig, {"object_weight": 0.5})


def test_edit_weight_scales_the_loss_on_the_changed_pixels_and_adds_to_the_object_weight():
    from refine.backbones.shapes import build_shapes_backbone
    backbone = build_shapes_backbone(layers=1, width=32, heads=2, seed=0).eval()
    source, target, ids, mask, t, noise = fixed_batch(backbone, n=4)
    edited = edited_pixel_mask(source, target)  # (B, 1, H, W)
    # every case changes something, and no case (of these four) repaints the whole image
    assert edited.flatten(1).any(dim=1).all() and edited.float().mean() < 0.5
    assert not torch.equal(edited, source_object_mask(source))  # a different mask from the object weight's

    objects = packed_mask(source_object_mask(source), source)
    with torch.no_grad():
        squared = squared_velocity_error(backbone, source, target, ids, mask, t, noise)
        for object_weight, edit_weight in [(1.0, 4.0), (5.0, 4.0)]:
            weight = 1 + (object_weight - 1) * objects + (edit_weight - 1) * packed_mask(edited, source)
            by_hand = float((weight * squared).sum() / weight.sum())
            loss = flow_matching_loss(
                backbone, source, target, ids, mask, t, noise, object_weight=object_weight, edit_weight=edit_weight
            )
            assert loss.item() == pytest.approx(by_hand, rel=1e-5)
    with pytest.raises(ConfigError, match="edit_weight"):
        from refine.config import validate_config

        validate_config(BaseTrainConfig, {"edit_weight": 0.0})
