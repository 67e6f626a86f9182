"""`refine train thinker --stage grpo`: the three rewards on hand-built replies, the config and presets, one GRPO step.

The think-before-edit path has a learning test (the tiny random model, an editor that pays short
instructions: E(I^t) rises in 16 steps); whether GRPO raises the ShapeEdit VLM's R_edit is measured
in benchmarks/RESULTS.md, not here (that model is trained for hours, not built in a test).
"""

import json
import math
from pathlib import Path

import pytest
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from datasets import DatasetDict
from PIL import Image
from transformers import AutoModelForImageTextToText

from refine.cli import main
from refine.config import load_config
from refine.errors import ConfigError
from refine.presets import find_preset
from refine.rewards.base import RewardOutput
from refine.rewards.mllm import MLLMJudge
from refine.shapes.data import stream_case
from refine.thinker.data import EditorSpec, build_editor
from refine.thinker.filters import Sample
from refine.thinker.format import parse_thinker_output
from refine.thinker.grpo import build_judge, grpo_arguments, grpo_rows
from refine.thinker.grpo_rewards import (
    EditReward,
    ReferenceMatchReward,
    answer_format_reward,
    answer_instruction,
    critic_reward,
    format_reward,
    group_seed,
    no_critic_reward,
)
from refine.thinker.train_config import ThinkerTrainConfig, accumulation_steps
from refine.thinker.trl_rows import samples_to_dataset
from refine.thinker.vlm import KEEP_REPLY
from refine.types import EditResult

ACCELERATE = Path(__file__).parents[2] / "examples" / "accelerate"


def reply(text, **extra):
    """A completion as GRPOTrainer hands it to reward functions (conversational)."""
    return [{"role": "assistant", "content": text, **extra}]


# Replies the forgiving parser reads (ok, often with repairs) but that are not the exact format.
REPAIRED = [
    "<THINK>r</THINK><score>[3, 8]</score><answer>make it blue</answer>",        # tag case (no repair reported)
    "<think>r</think><score>3/10, 8/10</score><answer>make it blue</answer>",
    '<think>r</think><score>{"semantic": 3, "quality": 8}</score><answer>make it blue</answer>',
    "<think>r</think><score>[3]</score><answer>make it blue</answer>",
    "<think>r</think><score>[3, 14]</score><answer>make it blue</answer>",
    "<score>[3, 8]</score><answer>make it blue</answer>",
    "Sure! <think>r</think><score>[3, 8]</score><answer>make it blue</answer>",
    "<answer>make it blue</answer><think>r</think><score>[3, 8]</score>",
    "<think>r</think><score>[3, 8]</score><answer>make it blue",
    '<think>r</think><score>[3, 8]</score><answer>"make it blue"</answer>',
    "<think>r</think><score>[3, 8]</score><answer>x</answer><answer>make it blue</answer>",
]
CANONICAL = "<think>r</think><score>[3, 8]</score><answer>make it blue</answer>"


def test_format_reward_pays_only_the_exact_format_never_a_repair():
    assert all(parse_thinker_output(text).ok for text in REPAIRED)  # the loop could use every one of them
    assert format_reward([reply(text) for text in REPAIRED]) == [0.0] * len(REPAIRED)
    assert format_reward([reply(CANONICAL), reply("\n" + CANONICAL.replace("><", ">\n<") + "\n"), CANONICAL]) == [1.0, 1.0, 1.0]
    # a Qwen3 response schema moves <think> into reasoning_content: the reply is read as written
    assert format_reward([reply("<score>[3, 8]</score><answer>make it blue</answer>", reasoning_content="r")]) == [1.0]
    assert format_reward([reply("garbage"), reply("")]) == [0.0, 0.0]


def test_critic_reward_is_minus_the_normalised_mean_absolute_error():
    completions = [reply("<think>r</think><score>[3, 9]</score><answer>a</answer>"),
                   reply("<think>r</think><score>[10, 0]</score><answer>a</answer>"),
                   reply("<think>r</think><score>[6, 1]</score><answer>a</answer>"),
                   reply("<think>r</think><score>[5]</score><answer>a</answer>"),
                   reply("no tags at all")]
    rewards = critic_reward(completions, semantic=[2.0, 0.0, 2.0, 7.0, 5.0], quality=[7.0, 10.0, math.nan, 9.0, 9.0])
    expected = [-(1 + 2) / 20, -(10 + 10) / 20, -4 / 10, -(2 / 10 + 1.0) / 2, -1.0]
    assert rewards == pytest.approx(expected)


class NoiseEditor:
    """Each (instruction, seed) gives its own gray level, as a sampler's noise would; records its requests."""

    def __init__(self):
        self.requests = []

    def edit(self, requests):
        self.requests += list(requests)
        return [EditResult(Image.new("RGB", (4, 4), (hash((r.instruction, r.seed)) % 256,) * 3), r.instruction) for r in requests]


def brightness_judge(sources, outputs, instructions, metas):
    return RewardOutput([o.getpixel((0, 0))[0] / 255 for o in outputs])


def _edit_columns(rows):
    """Reward columns for completions of the given rows: (trajectory_id, step, seed, shown image gray level)."""
    return {"images": [[Image.new("RGB", (4, 4)), Image.new("RGB", (4, 4), (gray,) * 3)] for _, _, _, gray in rows],
            "instruction": ["make it like the sky"] * len(rows), "meta": ["{}"] * len(rows),
            "seed": [seed for _, _, seed, _ in rows], "trajectory_id": [t for t, _, _, _ in rows], "step": [s for _, s, _, _ in rows]}


def test_edit_reward_edits_a_group_with_one_seed_and_scores_the_gain():
    editor = NoiseEditor()
    reward = EditReward(editor, brightness_judge)
    answer = lambda a: reply(f"<think>r</think><score>[3, 8]</score><answer>{a}</answer>")  # noqa: E731
    rows = [("t0", 1, 41, 51)] * 4 + [("t1", 2, -1, 102)] * 2  # two groups: 4 and 2 rollouts
    completions = [answer("paint it blue"), answer("paint it blue"), answer("paint it cyan"), reply("garbage"),
                   answer("paint it blue"), answer("paint it navy")]
    rewards = reward(completions, **_edit_columns(rows))
    # every rollout of a prompt is edited with that prompt's seed; identical rewrites are edited once
    seeds = {(r.instruction, r.seed) for r in editor.requests}
    assert seeds == {("paint it blue", 41), ("paint it cyan", 41), ("paint it blue", group_seed(-1, "t1", 2)), ("paint it navy", group_seed(-1, "t1", 2))}
    assert len(editor.requests) == 4
    gray = lambda instruction, seed: (hash((instruction, seed)) % 256) / 255  # noqa: E731
    assert rewards[0] == rewards[1] == pytest.approx(gray("paint it blue", 41) - 51 / 255)  # E(I^t) - E(I^{t-1})
    assert rewards[2] == pytest.approx(gray("paint it cyan", 41) - 51 / 255)
    assert rewards[3] == -1.0  # no usable instruction: the worst value
    assert rewards[5] == pytest.approx(gray("paint it navy", group_seed(-1, "t1", 2)) - 102 / 255)
    # the same prompt in a later batch is edited with the same seed again
    reward([answer("paint it blue")], **_edit_columns(rows[:1]))
    assert (editor.requests[-1].instruction, editor.requests[-1].seed) == ("paint it blue", 41)


def test_edit_reward_before_the_first_edit_scores_a_rewrite_against_the_plain_edit_with_its_seed():
    editor = NoiseEditor()
    reward = EditReward(editor, brightness_judge, answer_of=answer_instruction)  # rewrite-only replies: the text is the instruction
    instruction = "make it like the sky"
    columns = {"images": [[Image.new("RGB", (4, 4))]] * 4, "instruction": [instruction] * 4, "meta": ["{}"] * 4,
               "seed": [7] * 4, "trajectory_id": ["t0"] * 4, "step": [0] * 4}
    rewards = reward([reply("make the circle blue"), reply(f" {instruction} "), reply(""), reply("make the circle blue")], **columns)
    gray = lambda text: (hash((text, 7)) % 256) / 255  # noqa: E731
    # I^{t-1} is the plain edit: the user's instruction with the row's seed, edited once per row
    assert [(r.instruction, r.seed) for r in editor.requests] == [(instruction, 7), ("make the circle blue", 7)]
    assert rewards[0] == rewards[3] == pytest.approx(gray("make the circle blue") - gray(instruction))
    assert rewards[1] == 0.0  # the instruction left as it is: the plain edit itself, no editor call
    assert rewards[2] == -1.0  # an empty reply is no instruction
    assert answer_format_reward([reply("make it blue"), reply("   "), reply("x" * 5000)]) == [1.0, 0.0, 0.0]
    assert no_critic_reward([reply("a"), reply("b")]) == [None, None]


def test_edit_reward_reads_the_keep_reply_as_the_plain_edit():
    editor = NoiseEditor()
    reward = EditReward(editor, brightness_judge, answer_of=answer_instruction, keep=KEEP_REPLY)
    columns = {"images": [[Image.new("RGB", (4, 4))]] * 2, "instruction": ["make it like the sky"] * 2, "meta": ["{}"] * 2,
               "seed": [7] * 2, "trajectory_id": ["t0"] * 2, "step": [0] * 2}
    assert reward([reply(KEEP_REPLY), reply("keep the circle")], **columns)[0] == 0.0
    # "keep" alone is the user's instruction (no edit of "keep"); a longer reply is an instruction like any other
    assert [r.instruction for r in editor.requests] == ["make it like the sky", "keep the circle"]
    assert EditReward(editor, brightness_judge, answer_of=answer_instruction)([reply(KEEP_REPLY)], **{k: v[:1] for k, v in columns.items()}) != [0.0]


def test_edit_reward_on_shapeedit_runs_the_bundled_editor_and_the_exact_judge():
    case = stream_case(5, 0)
    meta = json.dumps(case.to_request(seed=3).meta)
    judge = build_judge("shapes_overall")
    reward = EditReward(build_editor(EditorSpec(name="e", steps=2)), judge)
    columns = lambda n: {"images": [[case.source_image, case.source_image]] * n, "instruction": [case.instruction] * n,  # noqa: E731
                         "meta": [meta] * n, "seed": [3] * n, "trajectory_id": ["t0"] * n, "step": [1] * n}
    text = lambda a: reply(f"<think>r</think><score>[0, 10]</score><answer>{a}</answer>")  # noqa: E731
    other = stream_case(5, 1).direct_instruction  # another case's edit, in the editor's vocabulary
    first = reward([text(case.direct_instruction), text(other), reply("garbage")], **columns(3))
    before = judge([case.source_image], [case.source_image], [case.instruction], [json.loads(meta)]).scores[0]
    assert [d["before"] for d in reward.last] == [before] * 3 and before < 0.5  # I_{t-1} is the unedited source
    assert first[0] == pytest.approx(reward.last[0]["after"] - before) and first[0] > 0  # the direct rewrite helps
    assert first[2] == -1.0
    # a later batch with the same prompt and rewrite reproduces E(I^t): the seed is the row's, not the call's
    again = reward([text(other), text(case.direct_instruction)], **columns(2))
    assert again[1] == pytest.approx(first[0])
    assert {d["seed"] for d in reward.last} == {3}


def test_config_rejects_typos_uneven_groups_and_weights_not_summing_to_one(tmp_path):
    preset = find_preset("thinker_train/shapes-grpo")
    with pytest.raises(ConfigError, match="did you mean 'num_generations'"):
        load_config(ThinkerTrainConfig, preset, ["num_generation=4"])
    with pytest.raises(ConfigError, match="multiple of num_generations"):
        load_config(ThinkerTrainConfig, preset, ["batch_size=20"])
    with pytest.raises(ConfigError, match="sum to 1"):
        load_config(ThinkerTrainConfig, preset, ["reward_weights.edit=0.7"])
    with pytest.raises(ConfigError, match="did you mean"):
        load_config(ThinkerTrainConfig, preset, ["reward_weights.edt=0.6"])
    with pytest.raises(ConfigError, match="holds the starting model"):  # GRPO from runs/thinker-sft/final into runs/thinker-sft
        load_config(ThinkerTrainConfig, preset, ["output_dir=runs/thinker-sft"])


def test_presets_hold_the_papers_grpo_settings_and_validate():
    real = load_config(ThinkerTrainConfig, find_preset("thinker_train/qwen3-vl-8b-grpo"), [])
    assert (real.stage, real.split, real.epochs, real.learning_rate, real.batch_size, real.num_generations) == ("grpo", "rl", 1.0, 2e-6, 128, 8)
    assert (real.beta, real.loss_type, real.scale_rewards, real.use_vllm, real.vllm_mode, real.bf16) == (1e-3, "grpo", "group", True, "server", True)
    assert real.image_size == (1024, 1024) and real.image_size[0] % 32 == 0  # one size for vLLM server mode (Qwen3-VL: 32-pixel units)
    assert accumulation_steps(real, processes=4) == 8
    args = grpo_arguments(real, "/tmp/unused", accumulation=8)
    assert (args.beta, args.loss_type, args.num_generations, args.use_vllm, args.vllm_mode) == (1e-3, "grpo", 8, True, "server")
    assert args.reward_weights == [0.1, 0.3, 0.6]
    assert isinstance(build_judge(real.judge), MLLMJudge) and real.editor.factory  # an MLLM judge, the user's editor
    launch = _validate_launch_command(launch_command_parser().parse_args(
        ["--config_file", str(ACCELERATE / "thinker_grpo_zero3.yaml"), "-m", "refine", "train", "thinker"]))[0]
    assert launch.use_deepspeed and int(launch.zero_stage) == 3 and launch.num_processes == 4 and launch.mixed_precision == "bf16"
    shapes = load_config(ThinkerTrainConfig, find_preset("thinker_train/shapes-grpo"), [])
    assert (shapes.stage, shapes.judge, shapes.editor.steps, shapes.bf16, shapes.use_vllm) == ("grpo", "shapes_overall", 8, False, False)
    before = load_config(ThinkerTrainConfig, find_preset("thinker_train/shapes-grpo-before"), [])
    assert (before.prompt, before.reward_weights.edit, before.judge, before.editor.steps) == ("shapes-rewrite", 1.0, "shapes_overall", 8)
    match = load_config(ThinkerTrainConfig, find_preset("thinker_train/shapes-grpo-match"), [])
    assert (match.prompt, match.reward_weights.edit, match.edit_reward, match.model) == ("shapes-rewrite", 1.0, "reference_match",
                                                                                      "refine/assets/shapes-thinker")
    # a config that leaves them out gets the paper's values of its stage
    bare = ThinkerTrainConfig(model="m", dataset="d", stage="grpo")
    assert (bare.learning_rate, bare.batch_size, bare.beta, bare.loss_type) == (2e-6, 128, 1e-3, "grpo")


def _rl_samples(n=2, sizes=((32, 32),)):
    samples = []
    for i in range(n):
        case = stream_case(5, i)
        source = case.source_image.resize(sizes[i % len(sizes)])
        samples.append(Sample(f"t{i}", 1, case.category, source, source, case.instruction, case.instruction,
                              "nothing changed", 0.0, 10.0, case.direct_instruction, seed=11 + i, meta=case.to_request(seed=11 + i).meta))
    return samples


def test_rows_drop_the_expert_answer_and_fit_images_to_one_size_for_vllm_server(tmp_path):
    DatasetDict({"rl": samples_to_dataset(_rl_samples(2, sizes=((32, 32), (48, 32))))}).save_to_disk(str(tmp_path / "data"))
    config = ThinkerTrainConfig(model="m", dataset=str(tmp_path / "data"), stage="grpo", use_vllm=True, vllm_mode="server")
    with pytest.raises(ConfigError, match="set image_size"):
        grpo_rows(config)
    rows = grpo_rows(config.model_copy(update={"image_size": (40, 40)}))
    assert "completion" not in rows.column_names
    assert {image.size for images in rows["images"] for image in images} == {(40, 40)}
    assert [image.size for image in rows[1]["original_images"]] == [(48, 32), (48, 32)]  # the editor and judge get these


def test_grpo_cli_runs_a_step_and_writes_a_loadable_final(tmp_path, tiny_vlm_path):
    DatasetDict({"rl": samples_to_dataset(_rl_samples(2))}).save_to_disk(str(tmp_path / "data"))
    config = tmp_path / "grpo.yaml"
    config.write_text(f"output_dir: {tmp_path / 'run'}\nmodel: {tiny_vlm_path}\ndataset: {tmp_path / 'data'}\nmax_steps: 1\n"
                      "batch_size: 4\nper_device_batch_size: 4\nnum_generations: 2\nmax_completion_length: 16\nlogging_steps: 1\n"
                      "progress: false\neditor: {name: e, steps: 2}\n")
    main(["train", "thinker", "--config", str(config), "--stage", "grpo"])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stage"] == "grpo" and summary["global_step"] == 1 and summary["frozen"] == "model.visual"
    means = summary["last_rewards"]
    weighted = 0.1 * means["rewards/format_reward/mean"] + 0.3 * means["rewards/critic_reward/mean"] + 0.6 * means["rewards/edit_reward/mean"]
    assert summary["last_reward"] == pytest.approx(weighted, abs=1e-6)  # Eq. 5 with the default weights
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("kl" in row and "edit/judge_before" in row for row in logged)  # KL term on (beta > 0), edit reward ran
    model = AutoModelForImageTextToText.from_pretrained(summary["final"])
    assert model.config.model_type == "qwen2_5_vl"


def _first_turn_grpo(tmp_path, model, cases, **settings):
    """`refine thinker first-turn` on `cases` stream cases, then `refine train thinker --stage grpo` on them (R_edit alone)."""
    main(["thinker", "first-turn", "--config", "thinker_data/shapes-first-turn", f"output_dir={tmp_path / 'rows'}", f"cases={cases}"])
    lines = [f"output_dir: {tmp_path / 'run'}", f"model: {model}", f"dataset: {tmp_path / 'rows' / 'dataset'}", "prompt: shapes-rewrite",
             "reward_weights: {format: 0.0, critic: 0.0, edit: 1.0}", "logging_steps: 1", "progress: false"]
    config = tmp_path / "grpo.yaml"
    config.write_text("\n".join(lines + [f"{key}: {value}" for key, value in settings.items()]) + "\n")
    main(["train", "thinker", "--config", str(config), "--stage", "grpo"])


def test_first_turn_rows_run_a_rewrite_only_grpo_step(tmp_path, tiny_vlm_path):
    _first_turn_grpo(tmp_path, tiny_vlm_path, cases=2, max_steps=1, batch_size=4, per_device_batch_size=4, num_generations=2,
                     max_completion_length=8, editor="{name: e, steps: 2}")
    rows = DatasetDict.load_from_disk(str(tmp_path / "rows" / "dataset"))["rl"]
    assert [len(images) for images in rows["images"]] == [1, 1]  # the source only: the reply makes the first edit
    assert rows[0]["prompt"][1]["content"][-1]["text"].endswith(rows[0]["instruction"])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    means = summary["last_rewards"]
    assert summary["last_reward"] == pytest.approx(means["rewards/edit_reward/mean"], abs=1e-6)  # only R_edit weighs
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any(row.get("edit/editor_calls", 0) >= 2 for row in logged)  # the two plain edits at least
    assert any("edit/unchanged" in row for row in logged)  # the share of rollouts that keep the user's instruction


def test_reference_match_pays_only_the_exact_reference_and_reads_replies_as_the_loop_does():
    rewrite_only = ReferenceMatchReward(answer_instruction, keep=KEEP_REPLY)
    rows = {"reference": ["make the red circle blue", "remove the square"], "instruction": ["make the sky-coloured one red", "remove the square"]}
    assert rewrite_only([reply(" make the red circle blue "), reply(KEEP_REPLY)], **rows) == [1.0, 1.0]  # keep = the instruction, right here
    assert rewrite_only([reply("make the red circle green"), reply("remove the squares")], **rows) == [0.0, 0.0]
    assert rewrite_only([reply(KEEP_REPLY), reply("")], **rows) == [0.0, 0.0]  # keeping an indirect instruction is not its reference
    thinker_format = ReferenceMatchReward()  # EditThinker's format: the <answer>, forgiving parser
    assert thinker_format([reply(CANONICAL), reply(CANONICAL)], reference=["make it blue", "make it red"], instruction=["a", "b"]) == [1.0, 0.0]


def test_reference_match_grpo_step_loads_no_editor_and_logs_the_reward(tmp_path, tiny_vlm_path, monkeypatch):
    import refine.thinker.grpo as grpo

    monkeypatch.setattr(grpo, "build_editor", lambda spec: pytest.fail("reference_match must not load an editor"))
    _first_turn_grpo(tmp_path, tiny_vlm_path, cases=2, max_steps=1, batch_size=4, per_device_batch_size=4, num_generations=2,
                     max_completion_length=8, edit_reward="reference_match")
    rows = DatasetDict.load_from_disk(str(tmp_path / "rows" / "dataset"))["rl"]
    assert rows["reference"] == [stream_case(51, i, indirect_fraction=0.8).direct_instruction for i in range(2)]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["last_reward"] == pytest.approx(summary["last_rewards"]["rewards/reference_match/mean"], abs=1e-6)


def test_reference_match_needs_rows_with_a_reference(tmp_path):
    samples_to_dataset(_rl_samples()).save_to_disk(str(tmp_path / "rows"))
    config = ThinkerTrainConfig(model="m", dataset=str(tmp_path / "rows"), stage="grpo", edit_reward="reference_match")
    with pytest.raises(ConfigError, match=r"\['reference'\] missing"):
        grpo_rows(config)


def test_a_thinker_style_without_a_reward_reader_is_refused(tmp_path):
    from refine.thinker.grpo import build_rewards

    with pytest.raises(ConfigError, match="no GRPO reward reader"):
        build_rewards(ThinkerTrainConfig(model="m", dataset="d", stage="grpo", prompt="shapes-rewrite-think"))


class ShortIsBrightEditor:
    """An editor whose output is brighter the shorter its instruction: R_edit pays a rewrite shorter than the user's."""

    def edit(self, requests):
        return [EditResult(Image.new("RGB", (4, 4), (int(255 * max(0.0, 1 - len(r.instruction) / 80)),) * 3), r.instruction)
                for r in requests]


@pytest.mark.slow
def test_grpo_before_the_first_edit_raises_the_edit_reward(tmp_path, tiny_vlm_path, monkeypatch):
    """The think-before-edit path learns: rows, the rewrite-only reader and R_edit against the plain edit, through GRPOTrainer."""
    import refine.thinker.grpo as grpo

    monkeypatch.setattr(grpo, "build_editor", lambda spec: ShortIsBrightEditor())
    monkeypatch.setattr(grpo, "build_judge", lambda spec: brightness_judge)
    _first_turn_grpo(tmp_path, tiny_vlm_path, cases=64, max_steps=16, learning_rate=3e-3, warmup_ratio=0.0, beta=0.0, batch_size=32,
                     per_device_batch_size=32, num_generations=8, max_completion_length=24, save_steps=100)
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # E(I^t) of the rollouts: R_edit less the plain edit's score, which differs from prompt to prompt
    after = [row["edit/judge_after"] for row in logged if "edit/judge_after" in row]
    assert len(after) == 16 and all("rewards/edit_reward/mean" in row for row in logged if "edit/judge_after" in row)
    first, last = sum(after[:4]) / 4, sum(after[-4:]) / 4
    assert last > first + 0.05, after
