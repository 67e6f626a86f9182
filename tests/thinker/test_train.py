"""`refine train thinker --stage sft`: presets, refusals, and SFT on the tiny Qwen2.5-VL learning the format."""

import json

import pytest
import torch
from transformers import AutoModelForImageTextToText

from refine.cli import main
from refine.config import load_config
from refine.errors import ConfigError
from refine.presets import find_preset
from refine.shapes.data import stream_case
from refine.thinker.filters import Sample
from refine.thinker.format import parse_thinker_output
from refine.thinker.protocol import ThinkRequest
from refine.thinker.train import ThinkerTrainConfig, accumulation_steps, train
from refine.thinker.trl_rows import samples_to_dataset
from refine.thinker.vlm import VLMThinker


def test_presets_hold_the_papers_settings_for_the_real_model():
    real = load_config(ThinkerTrainConfig, find_preset("thinker_train/qwen3-vl-8b-sft"), [])
    assert (real.stage, real.epochs, real.learning_rate, real.batch_size, real.bf16, real.freeze_vision) == ("sft", 1.0, 2e-5, 32, True, True)
    assert accumulation_steps(real, processes=8) == 1 and accumulation_steps(real, processes=2) == 4
    shapes = load_config(ThinkerTrainConfig, find_preset("thinker_train/shapes-sft"), [])
    assert shapes.bf16 is False and shapes.split == "sft"
    with pytest.raises(ConfigError, match="not a multiple"):
        accumulation_steps(real, processes=3)


def test_a_missing_split_is_refused(tmp_path):
    samples_to_dataset([]).save_to_disk(str(tmp_path / "flat"))  # a plain Dataset asked for a split
    from datasets import DatasetDict

    DatasetDict({"rl": samples_to_dataset([_samples()[0]])}).save_to_disk(str(tmp_path / "dict"))
    with pytest.raises(ConfigError, match="holds the splits"):
        train(ThinkerTrainConfig(model="unused", dataset=str(tmp_path / "dict"), output_dir=str(tmp_path / "run")))


def test_several_dataset_folders_are_joined_split_by_split(tmp_path):
    from datasets import DatasetDict

    from refine.thinker.train_config import load_rows

    samples = _samples()
    DatasetDict({"sft": samples_to_dataset(samples[:3]), "rl": samples_to_dataset(samples[3:4])}).save_to_disk(str(tmp_path / "a"))
    DatasetDict({"sft": samples_to_dataset(samples[4:])}).save_to_disk(str(tmp_path / "b"))
    config = ThinkerTrainConfig(model="unused", dataset=[str(tmp_path / "a"), str(tmp_path / "b")], output_dir=str(tmp_path / "run"))
    rows = load_rows(config)
    expected = samples_to_dataset(samples[:3] + samples[4:])
    assert config.split == "sft" and rows.column_names == ["prompt", "completion", "images"]  # joined on what training reads
    assert rows["completion"] == expected["completion"] and rows["prompt"] == expected["prompt"]
    with pytest.raises(ConfigError, match=f"{tmp_path / 'b'} holds the splits"):
        load_rows(config.model_copy(update={"split": "rl"}))
    with pytest.raises(ValueError, match="dataset is empty"):
        ThinkerTrainConfig(model="unused", dataset=[], output_dir=str(tmp_path / "run"))


def test_thinker_rows_mix_with_other_conversational_rows(tmp_path):
    """A flat folder of other conversational rows with other metadata (as the ShapeEdit VLM's rewrite
    rows) joins a thinker dataset's split on the columns training reads."""
    from datasets import Dataset, DatasetDict

    from refine.thinker.train_config import load_rows

    thinker = samples_to_dataset(_samples()[:2])
    DatasetDict({"sft": thinker}).save_to_disk(str(tmp_path / "thinker"))
    other = Dataset.from_dict({"task": ["rewrite"], "case_id": ["c0"], "prompt": thinker["prompt"][:1],
                               "completion": [[{"role": "assistant", "content": [{"type": "text", "text": "make it red"}]}]],
                               "images": thinker["images"][:1]})
    other.save_to_disk(str(tmp_path / "other"))
    rows = load_rows(ThinkerTrainConfig(model="unused", dataset=[str(tmp_path / "thinker"), str(tmp_path / "other")]))
    assert len(rows) == 3 and rows[2]["completion"][0]["content"][0]["text"] == "make it red"

def _samples():
    """Per stream case: the unchanged source scored 0 with the direct rewrite; the target scored 10, kept."""
    samples = []
    for i in range(4):
        case = stream_case(5, i)
        samples.append(Sample(f"t{i}", 1, case.category, case.source_image, case.source_image, case.instruction, case.instruction,
                              "nothing changed", 0.0, 10.0, case.direct_instruction))
        samples.append(Sample(f"t{i}", 2, case.category, case.source_image, case.target_image, case.instruction, case.direct_instruction,
                              "done", 10.0, 10.0, case.direct_instruction, terminal=True))
    return samples


@pytest.mark.slow(minutes=3)
def test_sft_loss_falls_and_the_saved_thinker_speaks_the_format(tmp_path, tiny_vlm_path, capsys):
    samples = _samples()
    samples_to_dataset(samples).save_to_disk(str(tmp_path / "data"))
    config = tmp_path / "sft.yaml"
    config.write_text(f"output_dir: {tmp_path / 'run'}\nmodel: {tiny_vlm_path}\ndataset: {tmp_path / 'data'}\nsplit: null\n"
                      "max_steps: 80\nbatch_size: 8\nper_device_batch_size: 8\nlearning_rate: 1.0e-2\nwarmup_ratio: 0.0\n"
                      "logging_steps: 5\nprogress: false\n")
    main(["train", "thinker", "--config", str(config), "--stage", "sft"])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["global_step"] == 80 and summary["frozen"] == "model.visual"
    assert summary["last_loss"] < summary["first_loss"] / 4
    # the vision tower is frozen by default: its weights are the initial ones, the language model's moved
    before = AutoModelForImageTextToText.from_pretrained(tiny_vlm_path).state_dict()
    after = AutoModelForImageTextToText.from_pretrained(summary["final"]).state_dict()
    visual = [k for k in before if ".visual." in f".{k}"]
    language = [k for k in before if "language_model" in k and k.endswith("weight")]
    assert visual and all(torch.equal(before[k], after[k]) for k in visual)
    assert any(not torch.equal(before[k], after[k]) for k in language)
    # the saved folder is a thinker whose replies the parser reads
    thinker = VLMThinker.from_spec(summary["final"], max_new_tokens=60)
    thoughts = thinker.think([ThinkRequest(s.source, s.image, s.instruction, s.previous_instruction) for s in samples])
    assert all(t.ok and parse_thinker_output(t.raw).ok for t in thoughts)


def test_sft_resumed_from_a_checkpoint_reproduces_the_uninterrupted_run(tmp_path, tiny_vlm_path):
    from safetensors.torch import load_file

    from refine.training.metrics import read_metrics

    samples_to_dataset(_samples()).save_to_disk(str(tmp_path / "data"))

    def config(**extra):
        return ThinkerTrainConfig(output_dir=str(tmp_path / "run"), model=str(tiny_vlm_path), dataset=str(tmp_path / "data"),
                                  split=None, max_steps=6, batch_size=4, per_device_batch_size=4, learning_rate=1e-2,
                                  warmup_ratio=0.0, save_steps=2, save_total_limit=3, logging_steps=1, progress=False, **extra)

    straight_summary = train(config())
    straight = load_file(tmp_path / "run" / "final" / "model.safetensors")
    later = tmp_path / "run" / "checkpoints" / "checkpoint-6"   # interrupted after step 4
    for path in sorted(later.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    later.rmdir()
    resumed_summary = train(config(resume_from="latest"))
    resumed = load_file(tmp_path / "run" / "final" / "model.safetensors")
    assert straight_summary["global_step"] == resumed_summary["global_step"] == 6
    # the resumed run trained steps 5 and 6 only (a fresh start would have logged 1-6 again, to the same weights)
    assert [row["step"] for row in read_metrics(tmp_path / "run") if "loss" in row] == [1, 2, 3, 4, 5, 6, 5, 6]
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, msg=name)
    initial = AutoModelForImageTextToText.from_pretrained(tiny_vlm_path).state_dict()
    trained = AutoModelForImageTextToText.from_pretrained(tmp_path / "run" / "final").state_dict()
    assert any(not torch.equal(initial[k], trained[k]) for k in initial if "language_model" in k)


def test_resume_flag_and_resume_from_together_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "thinker", "--config", "thinker_train/shapes-sft", "--resume", f"output_dir={tmp_path}", "resume_from=latest"])
    assert exit_info.value.code == 2 and "resume_from" in capsys.readouterr().err
