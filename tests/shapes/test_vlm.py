"""The ShapeEdit VLM: tokenizer, vision geometry, plain-transformers loading, datasets, SFT training and resume."""

import dataclasses
import itertools
import json
import random
import re
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from refine._compat import ensure_torchvision_importable

ensure_torchvision_importable()  # transformers' processors import torchvision; see refine/_compat.py

from transformers import AutoModelForImageTextToText, AutoProcessor  # noqa: E402
from trl.data_utils import apply_chat_template, prepare_multimodal_messages  # noqa: E402

from refine.cli import main  # noqa: E402
from refine.errors import ConfigError, InputError  # noqa: E402
from refine.config import load_config  # noqa: E402
from refine.rewards.backends.transformers_vlm import TransformersVLM  # noqa: E402
from refine.rewards.mllm import MLLMJudge, reasoning_prefill  # noqa: E402
from refine.shapes.data import ShapeCase, load_split, stream_case, training_stream  # noqa: E402
from refine.shapes.edits import Recolor  # noqa: E402
from refine.shapes.vlm.data import VLMDataConfig, build_dataset  # noqa: E402
from refine.shapes.vlm.model import TOKENS_PER_SCENE, VLMSize, build_shapes_vlm, torch_default_init  # noqa: E402
from refine.shapes.judge import judge_edit, parse_image  # noqa: E402
from refine.shapes.vlm.tasks import bare_score_example, judge_example, lookup_named, seeing_examples  # noqa: E402
from refine.shapes.vlm.tokenizer import build_shapes_tokenizer  # noqa: E402
from refine.shapes.vlm.config import VLMTrainConfig  # noqa: E402
from refine.shapes.vlm.tower import TowerPretrainConfig, pretrain_tower  # noqa: E402
from refine.shapes.vlm.train import train  # noqa: E402
from refine.shapes.world import POSITION_NAMES, POSITIONS, Obj, Scene, render  # noqa: E402
from refine.training.accelerate_setup import make_accelerator  # noqa: E402


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_shapes_vlm(tmp_path_factory.mktemp("vlm"), VLMSize.tiny())


def test_every_score_and_verdict_is_one_token_where_the_judge_reads_it():
    tok = build_shapes_tokenizer(vocab_size=600)
    prefill = tok.encode('"Score": [[')
    for score in [str(d) for d in range(11)]:
        ids = tok.encode('"Score": [[' + score)
        assert ids[: len(prefill)] == prefill and len(ids) == len(prefill) + 1, score
        assert tok.decode(ids[-1:]) == score
    verdict_prefill = tok.encode('"Judgement": [[')
    for verdict in ("Yes", "No"):
        assert tok.encode('"Judgement": [[' + verdict) == verdict_prefill + tok.encode(verdict)
        assert len(tok.encode(verdict)) == 1


def test_torch_default_init_refuses_a_tied_head_and_rescales_an_untied_one(tiny_dir):
    tied = AutoModelForImageTextToText.from_pretrained(tiny_dir)
    with pytest.raises(ConfigError, match="untied"):
        torch_default_init(tied.model.language_model, tied.lm_head)
    untied = AutoModelForImageTextToText.from_pretrained(tiny_dir, tie_word_embeddings=False)
    vision_before = {k: v.clone() for k, v in untied.model.visual.state_dict().items()}
    torch_default_init(untied.model.language_model, untied.lm_head)
    assert 0.8 < untied.model.language_model.embed_tokens.weight.std().item() < 1.2     # N(0, 1), not N(0, 0.02)
    fan_in = untied.lm_head.weight.shape[1]
    assert untied.lm_head.weight.abs().max().item() <= fan_in ** -0.5 < 1                 # kaiming-uniform bound
    assert all(torch.equal(v, untied.model.visual.state_dict()[k]) for k, v in vision_before.items())   # the tower untouched


def test_a_32x32_scene_becomes_16_visual_tokens_through_the_saved_processor(tiny_dir):
    processor = AutoProcessor.from_pretrained(tiny_dir)
    image_token = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    case = load_split("shapes-val")[0]
    for size in (32, 64):  # a 64x64 render is brought to the same 32x32 pixel budget
        messages = [{"role": "user", "content": [{"type": "image", "image": render(case.source, size)}, {"type": "text", "text": "Describe the scene."}]}]
        inputs = processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt", add_generation_prompt=True)
        assert inputs["image_grid_thw"].tolist() == [[1, 8, 8]]          # 8x8 patches of 4 pixels
        assert int((inputs["input_ids"] == image_token).sum()) == TOKENS_PER_SCENE == 16


def test_cell_aligned_geometry_gives_one_visual_token_per_grid_cell(tmp_path):
    """image_side 48, patch 8: 6x6 patches, 3x3 merged tokens, and each token carries its own cell."""
    size = dataclasses.replace(VLMSize.tiny(), image_side=48, patch_size=8)
    assert size.tokens_per_image == 9
    folder = build_shapes_vlm(tmp_path / "cells", size)
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder)
    scenes = [Scene("white", (Obj("square", "red", "large", (0, 2)),)), Scene("white", ())]  # one object top right; none
    inputs = processor.image_processor([render(scene) for scene in scenes], return_tensors="pt")
    assert inputs["image_grid_thw"].tolist() == [[1, 6, 6]] * 2
    with torch.no_grad():
        features = model.model.get_image_features(pixel_values=inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"])
    features = getattr(features, "pooler_output", features)
    tokens, empty = torch.cat(list(features)).reshape(2, 9, -1) if isinstance(features, (list, tuple)) else features.reshape(2, 9, -1)
    moved = (tokens - empty).norm(dim=-1)  # merged tokens come out in reading order, so cell (0, 2) is token 2
    assert int(moved.argmax()) == 2
    with pytest.raises(Exception, match="multiple of"):
        build_shapes_vlm(tmp_path / "bad", dataclasses.replace(size, image_side=40))


def test_it_loads_with_plain_transformers_and_scores_through_the_rewards_layer(tiny_dir):
    model = AutoModelForImageTextToText.from_pretrained(tiny_dir)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    case = load_split("shapes-val")[0]
    out = MLLMJudge(TransformersVLM(tiny_dir), mode="score_logit")([case.source_image], [case.target_image], [case.instruction], [case.to_request().meta])
    assert out.scores[0] is not None and 0.0 <= out.scores[0] <= 1.0
    assert out.details[0]["mass"] > 0


def test_a_judge_example_is_the_text_score_logit_reads_followed_by_the_exact_judges_score(tiny_dir):
    processor = AutoProcessor.from_pretrained(tiny_dir)
    case = next(c for c in load_split("shapes-val") if c.category == "recolor")
    judge = MLLMJudge(TransformersVLM(tiny_dir), mode="score_logit")
    for output, label in ((case.target_image, "5"), (case.source_image, "0")):     # O = 1 and O = 0
        example = judge_example(case, output, "score", random.Random(0))
        assert example["completion"][0]["content"][0]["text"] == '"Score": [[' + label + "]]"
        example["prompt"] = prepare_multimodal_messages(example["prompt"], images=example["images"])
        example["completion"] = prepare_multimodal_messages(example["completion"])
        rendered = apply_chat_template(example, processor)       # what TRL trains on
        sent = judge.conversation(case.source_image, output, judge.user_text(case.instruction, case.to_request().meta))
        sent.append({"role": "assistant", "content": [{"type": "text", "text": judge.prompts.score_prefill}]})
        read = processor.apply_chat_template(sent, tokenize=False, continue_final_message=True)  # what score_logit reads
        assert (rendered["prompt"] + rendered["completion"]).startswith(read + label)


def unedited_with_a_stray_circle(case):
    """The case's source with a small circle added in a cell that must stay empty: (image, its cell, its colour)."""
    empty = next(p for p in POSITION_NAMES if case.source.at(p) is None and case.target.at(p) is None)
    colour = "black" if case.source.background != "black" else "white"
    return render(case.source.with_object(Obj("circle", colour, "small", empty)), case.size), empty, colour


def test_a_read_judge_example_is_the_cot_prompt_then_the_found_objects_the_edit_each_checked_cell_and_the_score(tiny_dir):
    processor = AutoProcessor.from_pretrained(tiny_dir)
    case = stream_case(41, 3, indirect_fraction=1.0)
    judge = MLLMJudge(TransformersVLM(tiny_dir), mode="score_logit_cot")
    wrong, _, _ = unedited_with_a_stray_circle(case)   # no edit, and a stray object
    for output in (case.target_image, case.source_image, wrong):
        score = judge_edit(case.source_image, output, case)
        example = judge_example(case, output, "score_read", random.Random(0))
        text = example["completion"][0]["content"][0]["text"]
        reasoning, label = re.fullmatch(r'"Reasoning": "(.*)",\n"Score": \[\[(\d)\]\]', text).groups()
        assert reasoning.startswith(lookup_named(case.source, case.instruction, found=True) + ". edit: " + case.direct_instruction + ". ")
        checked = reasoning.split(case.direct_instruction + ". ")[1].split("; ")
        changes = [c for c in score.checks if c.kind == "change"]
        failed_keeps = [c for c in score.checks if c.kind == "keep" and c.credit < 1]
        assert len(checked) == len(changes) + len(failed_keeps) and all(f"found {c.found}, " in line for c, line in zip(changes + failed_keeps, checked))
        assert abs(int(label) - 5 * score.overall) < 1
        # the conversation is the one the reasoning-first modes send, and the reasoning is cut where they read the score
        example["prompt"] = prepare_multimodal_messages(example["prompt"], images=example["images"])
        example["completion"] = prepare_multimodal_messages(example["completion"])
        rendered = apply_chat_template(example, processor)
        sent = judge.conversation(case.source_image, output, judge.user_text(case.instruction, case.to_request().meta))
        sent.append({"role": "assistant", "content": [{"type": "text", "text": reasoning_prefill(text, judge.prompts.score_prefill)}]})
        read = processor.apply_chat_template(sent, tokenize=False, continue_final_message=True)
        assert (rendered["prompt"] + rendered["completion"]).startswith(read + label)
    assert judge_example(case, case.target_image, "score_read", random.Random(0))["completion"][0]["content"][0]["text"].endswith(", ok\",\n\"Score\": [[5]]")


def test_a_walk_judge_example_reads_the_background_and_every_cell_in_order_each_as_the_exact_parser_found_it():
    case = stream_case(41, 3, indirect_fraction=1.0)
    stray, empty, colour = unedited_with_a_stray_circle(case)
    for output in (case.target_image, stray):
        text = judge_example(case, output, "score_walk", random.Random(0))["completion"][0]["content"][0]["text"]
        walked = text.split(case.direct_instruction + ". ")[1].split('",')[0].split("; ")
        assert [line.split(": ")[0] for line in walked] == ["background"] + [POSITION_NAMES[p] for p in POSITIONS]
        parsed = parse_image(output)
        assert [line.split(", found ")[1].rsplit(", ", 1)[0] for line in walked[1:]] == [
            cell.name for cell in parsed.cells]
        changed = {c.cell for c in judge_edit(case.source_image, output, case).checks if c.kind == "change"}
        assert {line.split(": ")[0] for line in walked if " -> " in line} == changed
    assert walked[1 + POSITIONS.index(empty)].endswith(f"nothing stays, found small {colour} circle, fail")


def test_the_dataset_comes_from_the_training_stream_with_spread_judge_labels():
    dataset = build_dataset(VLMDataConfig(cases=12, seeing_per_case=1, judge_per_case=2, editor=False))
    assert all(case_id.startswith("train-23-") for case_id in dataset["case_id"])
    assert {row["case_id"] for row in dataset} == {stream_case(23, i).id for i in range(12)}
    judged = [o for o in dataset["overall"] if o is not None]
    assert len(judged) == 24 and min(judged) < 0.3 and max(judged) > 0.9
    seeing = [t for t in dataset["task"] if not t.startswith("judge")]
    assert len(seeing) == 12


def test_several_editor_samples_per_case_are_edits_of_the_same_input_from_other_seeds():
    config = dict(cases=3, seeing_per_case=0, judge_per_case=0, editor=True, judge_kinds={"score": 1.0})
    single, several = build_dataset(VLMDataConfig(**config)), build_dataset(VLMDataConfig(**config, editor_samples=2))
    assert len(single) == 3 and len(several) == 6 and set(several["task"]) == {"judge_score:editor"}
    outputs: dict[str, list[bytes]] = {}
    for row in several:
        outputs.setdefault(row["case_id"], []).append(row["images"][1].tobytes())
    assert all(len(set(edits)) == 2 for edits in outputs.values())       # two seeds, two different edits
    # the first sample of every case is the single-sample dataset's edit
    assert {row["images"][1].tobytes() for row in single} <= {edit for edits in outputs.values() for edit in edits}


def test_output_grids_ask_the_editor_outputs_grid_answered_by_the_exact_parser():
    from refine.shapes.judge import parse_image
    from refine.shapes.vlm.tasks import describe_parsed_grid
    config = dict(cases=3, seeing_per_case=0, judge_per_case=0, editor=True, editor_samples=2, judge_kinds={"score": 1.0})
    dataset = build_dataset(VLMDataConfig(**config, output_grids=1))
    grids = [row for row in dataset if row["task"] == "grid_output"]
    judged = {row["images"][1].tobytes() for row in dataset if row["task"] == "judge_score:editor"}
    assert len(grids) == 3 and len(judged) == 6
    for row in grids:
        image = row["images"][0]
        assert image.tobytes() in judged                                   # one of the case's own editor outputs
        assert row["completion"][0]["content"][0]["text"] == describe_parsed_grid(parse_image(image))
        assert row["prompt"][-1]["content"][-1]["text"] == "What is in each cell?"


def test_contrast_judges_every_case_on_its_target_and_its_source_under_its_own_prompt():
    config = dict(cases=4, seeing_per_case=0, judge_per_case=0, editor=False, judge_kinds={"score": 1.0})
    assert len(build_dataset(VLMDataConfig(**config))) == 0
    dataset = build_dataset(VLMDataConfig(**config, contrast=True))
    by_case: dict[str, list[float]] = {}
    for row in dataset:
        by_case.setdefault(row["case_id"], []).append(row["overall"])
        assert row["task"] in {"judge_score:target", "judge_score:source"}
    # per case one perfect edit and one that changed nothing: the prompt alone cannot tell the label
    assert len(by_case) == 4 and all(sorted(labels)[0] < 0.5 and sorted(labels)[1] == 1.0 for labels in by_case.values())


def test_contrast_sparse_adds_target_and_source_rows_of_cases_whose_sources_hold_zero_to_three_objects():
    from refine.shapes.judge import parse_scene
    from refine.shapes.vlm.data import sparse_cases
    config = VLMDataConfig(cases=1, seed=98, contrast_sparse=24, seeing_per_case=0, judge_per_case=0, editor=False,
                           judge_kinds={"score": 1.0})
    dataset = build_dataset(config)
    rows = [row for row in dataset if row["case_id"].startswith("sparse-")]
    assert len(rows) == 48 and len(dataset) == 48                          # the one stream case has no contrast rows
    counts = set()
    for row in rows:
        source, output = (parse_scene(image) for image in row["images"])
        counts.add(len(source.objects))
        # the target scores 5 (O = 1), the source shown again as the edit scores low
        assert (row["overall"] == 1.0) == (row["task"] == "judge_score:target") and (output == source) == (row["overall"] < 0.5)
    assert counts == {0, 1, 2, 3}
    assert {c.id for c in sparse_cases(config.seed, 24)} == {row["case_id"] for row in rows}


def test_restage_asks_an_earlier_stages_walk_rows_again_with_the_bare_score_prompt(tmp_path):
    earlier = build_dataset(VLMDataConfig(cases=6, seed=3, seeing_per_case=1, judge_per_case=2, editor=False,
                                          judge_kinds={"score_walk": 1.0}))
    earlier.save_to_disk(str(tmp_path / "dataset"))
    saved = sorted(p.name for p in (tmp_path / "dataset").iterdir())
    config = dict(cases=0, seed=3, restage_from=[str(tmp_path / "dataset")])
    restaged = build_dataset(VLMDataConfig(**config, restage_bare=1.0, restage_other=1.0))
    assert sorted(p.name for p in (tmp_path / "dataset").iterdir()) == saved     # the earlier stage's folder is left as it was
    assert sorted(restaged["case_id"]) == sorted(earlier["case_id"])          # every row taken, judge and seeing
    # each walk row now carries exactly what a bare score row of its case and output would: the prompt
    # `score_logit` sends and the same score
    bare = {(row["case_id"], row["images"][1].tobytes()): row for row in restaged if row["task"].startswith("judge_")}
    cases = {case.id: case for case in itertools.islice(training_stream(3, indirect_fraction=0.3), 6)}
    assert len(bare) == 12
    for row in earlier:
        if not row["task"].startswith("judge_"):
            continue
        got = bare[(row["case_id"], row["images"][1].tobytes())]
        case = cases[row["case_id"]]
        assert got["task"] == row["task"].replace("judge_score_walk", "judge_score")
        assert got["prompt"] == judge_example(case, row["images"][1], "score", random.Random(0))["prompt"]
        assert got["completion"][0]["content"][0]["text"] == row["completion"][0]["content"][0]["text"].rsplit(",\n", 1)[1]
        assert got["overall"] == row["overall"]
    # new cases come on top of the restaged rows
    both = build_dataset(VLMDataConfig(**{**config, "cases": 2}, editor=False, seeing_per_case=1, judge_per_case=1,
                                       restage_bare=1.0, restage_other=1.0))
    assert len(both) == len(earlier) + 2 * 2 and sum(t.startswith("judge_score_walk") for t in both["task"]) == 0
    # at restage_bare 0 the walk rows stay, and restage_other drops seeing rows
    kept = build_dataset(VLMDataConfig(**config, restage_bare=0.0, restage_other=0.0))
    assert sorted(kept["task"]) == sorted(t for t in earlier["task"] if t.startswith("judge_score_walk"))


def test_restage_refuses_a_folder_that_is_no_dataset_and_an_empty_config(tmp_path):
    with pytest.raises(InputError, match="not a saved dataset"):
        build_dataset(VLMDataConfig(cases=0, restage_from=[str(tmp_path)]))
    with pytest.raises(ValidationError, match="needs restage_from"):
        VLMDataConfig(cases=0)
    row = judge_example(stream_case(41, 3), stream_case(41, 3).target_image, "score", random.Random(0))
    with pytest.raises(InputError, match="reasoning-first judge row"):
        bare_score_example(row)


def test_pair_at_asks_one_cell_of_one_of_two_images_and_often_where_they_differ():
    from refine.shapes.judge import parse_scene
    from refine.shapes.vlm.tasks import POSITION_NAMES, _name
    rng, differ, second = random.Random(0), 0, 0
    examples = [e for case in itertools.islice(training_stream(3), 40) for e in seeing_examples(case, rng, 1, {"pair_at": 1.0}, 0.0)]
    for example in examples:
        question = example["prompt"][-1]["content"][-1]["text"]
        which = 1 if " second image" in question else 0
        name = next(n for n in POSITION_NAMES.values() if f"the {n} of" in question)
        position = next(p for p, n in POSITION_NAMES.items() if n == name)
        scenes = [parse_scene(image) for image in example["images"]]     # the images, read back exactly
        assert len(scenes) == 2 and example["completion"][0]["content"][0]["text"] == _name(scenes[which].at(position))
        differ += scenes[0].at(position) != scenes[1].at(position)
        second += which
    assert 0.3 < second / len(examples) < 0.7 and differ / len(examples) > 0.4   # the other image would answer wrong


def test_not_in_lists_the_asked_images_objects_the_other_image_lacks_read_back_from_the_pixels():
    """Each answer is recomputed from both images read back exactly; the asked image and the other must both matter."""
    from refine.shapes.judge import parse_scene
    from refine.shapes.vlm.tasks import POSITION_NAMES, _name
    rng = random.Random(0)
    examples = [e for case in itertools.islice(training_stream(3), 60) for e in seeing_examples(case, rng, 1, {"not_in": 1.0}, 0.0)]
    answers, other_empty, partial = [], 0, 0
    for example in examples:
        question, answer = example["prompt"][-1]["content"][-1]["text"], example["completion"][0]["content"][0]["text"]
        asked_index = 1 if "in the second image that is not in the first" in question else 0
        scenes = [parse_scene(image) for image in example["images"]]
        asked, other = scenes[asked_index], scenes[1 - asked_index]
        lines = [f"{POSITION_NAMES[o.position]}: {_name(o)}" for o in sorted(asked.objects, key=lambda o: o.position)
                 if other.at(o.position) != o]
        assert answer == ("; ".join(lines) or "nothing")
        answers.append((asked_index, answer))
        other_empty += not other.objects
        partial += 0 < len(lines) < len(asked.objects)      # the other image takes some lines away, not all
    assert {index for index, _ in answers} == {0, 1}
    assert other_empty >= 5 and partial >= 10 and sum(a == "nothing" for _, a in answers) >= 3


def test_where_and_beside_name_the_cell_of_the_named_object_and_the_cell_next_to_it():
    """The two lookups a rewrite needs from an object to a cell's name, each checked against the image read back."""
    from refine.shapes.instructions import RELATIONS, STEPS
    from refine.shapes.judge import parse_scene
    dataset = build_dataset(VLMDataConfig(cases=40, seed=5, indirect_fraction=0.8, seeing_per_case=2, judge_per_case=0, editor=False,
                                          seeing_tasks={"where": 1.0, "beside": 1.0}, degrade_rate=0.0))
    cells = {name: position for position, name in POSITION_NAMES.items()}
    asked = {"where": 0, "beside": 0}
    for row in dataset:
        if row["task"] == "grid":   # a scene whose every object needs its cell to be named
            continue
        question, answer = row["prompt"][-1]["content"][-1]["text"], row["completion"][0]["content"][0]["text"]
        scene = parse_scene(row["images"][0])
        assert " in the " not in question and answer in cells
        if row["task"] == "where":
            name = question.removeprefix("Where is the ").removesuffix("?")
            obj = scene.at(cells[answer])
            assert obj is not None and name.endswith(f"{obj.color} {obj.shape}")
            assert sum(f"{o.color} {o.shape}" == f"{obj.color} {obj.shape}" for o in scene.objects) == 1 or name.startswith(obj.size)
        else:
            direction = next(d for d, words in RELATIONS.items() if f"directly {words} the " in question)
            name = question.split(f"directly {RELATIONS[direction]} the ")[1].removesuffix("?")
            dr, dc = STEPS[direction]
            r, c = cells[answer]
            anchor = scene.at((r - dr, c - dc))
            assert anchor is not None and name.endswith(f"{anchor.color} {anchor.shape}")
        asked[row["task"]] += 1
    assert min(asked.values()) >= 20


def test_question_first_puts_every_rows_text_before_its_images_and_changes_nothing_else():
    config = dict(cases=8, seed=5, seeing_per_case=1, judge_per_case=1, editor=False, seeing_tasks={"where": 1.0, "pair_at": 1.0})
    plain, first = build_dataset(VLMDataConfig(**config)), build_dataset(VLMDataConfig(**config, question_first=True))
    assert len(plain) == len(first) > 0
    for a, b in zip(plain, first):
        kinds = [part["type"] for part in b["prompt"][-1]["content"]]
        assert kinds == sorted(kinds, key=lambda kind: kind != "text") and kinds[0] == "text" and "image" in kinds
        assert sorted(kinds) == sorted(part["type"] for part in a["prompt"][-1]["content"])
        assert b["completion"] == a["completion"] and b["prompt"][0] == a["prompt"][0]


def test_rewrite_asks_the_source_and_instruction_and_answers_the_direct_phrasing():
    from refine.shapes.judge import parse_scene
    dataset = build_dataset(VLMDataConfig(cases=30, seed=5, indirect_fraction=0.9, seeing_per_case=1, judge_per_case=0, editor=False,
                                          seeing_tasks={"rewrite": 1.0}))
    cases = {case.id: case for case in itertools.islice(training_stream(5, indirect_fraction=0.9), 30)}
    assert len(dataset) == 30 and set(dataset["task"]) == {"rewrite"}
    changed = 0
    for row in dataset:
        case = cases[row["case_id"]]
        question, answer = row["prompt"][-1]["content"][-1]["text"], row["completion"][0]["content"][0]["text"]
        assert question.endswith(f"Instruction: {case.instruction}") and answer == case.direct_instruction
        assert len(row["images"]) == 1 and parse_scene(row["images"][0]) == case.source   # the source, which the riddles refer to
        changed += answer != case.instruction
    # the stream's indirect share follows the config, so most answers are not the question's own words
    assert changed >= 20 and sum(c.phrasing == "indirect" for c in cases.values()) >= 20


@pytest.mark.parametrize("task", ["rewrite_think", "rewrite_grid", "rewrite_locate", "rewrite_scan", "rewrite_scan_read", "rewrite_lookup",
                                  "rewrite_find"])
def test_rewrite_with_reasoning_writes_the_source_then_answers_the_direct_phrasing_in_the_thinker_tags(task):
    """rewrite_think writes the source scene first, rewrite_grid its nine cells, rewrite_locate / rewrite_scan[_read] their
    lookups; the loop's own parser reads every one apart from the rewrite."""
    from refine.shapes.judge import parse_scene
    from refine.shapes.vlm.tasks import QUESTIONS, REWRITE_REASONING, describe_grid
    from refine.thinker.format import parse_thinker_output
    dataset = build_dataset(VLMDataConfig(cases=12, seed=5, indirect_fraction=0.9, seeing_per_case=1, judge_per_case=0, editor=False,
                                          seeing_tasks={task: 1.0}))
    cases = {case.id: case for case in itertools.islice(training_stream(5, indirect_fraction=0.9), 12)}
    assert set(dataset["task"]) == {task}
    for row in dataset:
        case = cases[row["case_id"]]
        parsed = parse_thinker_output(row["completion"][0]["content"][0]["text"])   # the loop's own parser reads it
        assert parsed.ok and not parsed.repairs and parsed.output.answer == case.direct_instruction
        # the scene and the grid as their own questions answer them; the other formats are checked line by line below
        scene = {"rewrite_think": case.source.describe(), "rewrite_grid": describe_grid(case.source)}.get(task) or REWRITE_REASONING[task](case)
        assert parsed.output.reasoning == scene and parse_scene(row["images"][0]) == case.source
        assert row["prompt"][-1]["content"][-1]["text"] == QUESTIONS[task].format(instruction=case.instruction)


def test_empty_reasoning_keep_drops_only_rewrites_with_nothing_to_find():
    """Below 1, fewer riddle-only rewrites (empty <think>) and every lookup rewrite kept, so the lookups' share rises."""
    def rows(keep):
        dataset = build_dataset(VLMDataConfig(cases=200, seed=5, indirect_fraction=0.8, seeing_per_case=1, judge_per_case=0,
                                              editor=False, seeing_tasks={"rewrite_scan_read": 0.9, "grid": 0.1}, empty_reasoning_keep=keep))
        texts = [(row["task"], row["completion"][0]["content"][0]["text"]) for row in dataset]
        return ([t for task, t in texts if task == "rewrite_scan_read" and t.startswith("<think></think>")],
                [t for task, t in texts if task == "rewrite_scan_read" and not t.startswith("<think></think>")])
    (empty_all, lookups_all), (empty_some, lookups_some) = rows(1.0), rows(0.25)
    assert len(empty_all) > len(lookups_all) > 40                      # most stream cases have nothing to find
    assert sorted(lookups_some) == sorted(lookups_all) and set(empty_some) <= set(empty_all)
    assert 0.1 * len(empty_all) < len(empty_some) < 0.45 * len(empty_all)


def test_lookup_asks_every_object_by_a_name_without_its_cell_and_answers_the_cell_the_image_holds_it_in():
    """Each "X is in the Y" line: the object in that cell of the image read back is the one the name picks out (the
    phrasings name it so), the name gives no cell away, and the prompt's cells are the image's."""
    from refine.shapes.instructions import object_names
    from refine.shapes.judge import parse_scene
    from refine.shapes.vlm.tasks import describe_cells
    from refine.shapes.world import POSITION_NAMES
    cells = {name: position for position, name in POSITION_NAMES.items()}
    dataset = build_dataset(VLMDataConfig(cases=40, seed=6, seeing_per_case=1, judge_per_case=0, editor=False,
                                          seeing_tasks={"lookup": 1.0}, degrade_rate=0.0))
    riddles = lines = 0
    for row in dataset:
        scene = parse_scene(row["images"][0])
        if row["task"] == "grid":             # a scene with no object to look up
            assert not scene.objects
            continue
        assert row["prompt"][-1]["content"][-1]["text"].startswith(f"Cells: {describe_cells(scene)}.")
        answer = row["completion"][0]["content"][0]["text"].split("; ")
        assert len(answer) == len(scene.objects)
        for line in answer:
            name, _, cell = line.partition(" is in the ")
            assert name in object_names(scene, cells[cell]) and " in the " not in name
            riddles += "colour of" in name or "shape with" in name or "shape like" in name or "round" in name
            lines += 1
    assert lines >= 60 and riddles >= 10


def _found_line(line: str) -> tuple[str, tuple[int, int], str | None]:
    """(name, cell, key) of a `find` / `rewrite_find` line "name [key] cell"; the key, when written, is the name's own."""
    from refine.shapes.vlm.tasks import name_key
    from refine.shapes.world import POSITION_NAMES
    [(name, position)] = [(line[: -len(cell) - 1], p) for p, cell in POSITION_NAMES.items() if line.endswith(" " + cell)]
    if not name_key(name.rsplit(" ", 1)[0]):
        return name, position, None
    name, key = name.rsplit(" ", 1)   # a name with a colour and a shape carries its key before the cell
    assert key == name_key(name)
    return name, position, key


def test_find_asks_the_lookup_without_the_cells_and_answers_each_cell_right_after_its_name():
    """The `find` rows: the prompt is the question alone (the cells only in the image); each answer line is a name
    the phrasings give the object in the cell that follows it, with only the name's key between them."""
    from refine.shapes.instructions import object_names
    from refine.shapes.judge import parse_scene
    dataset = build_dataset(VLMDataConfig(cases=30, seed=6, seeing_per_case=1, judge_per_case=0, editor=False,
                                          seeing_tasks={"find": 1.0}, degrade_rate=0.0))
    lines = keyed = 0
    for row in dataset:
        scene = parse_scene(row["images"][0])
        if row["task"] == "grid":             # a scene with no object to find
            continue
        assert row["task"] == "find" and row["prompt"][-1]["content"][-1]["text"].startswith("Where is each of these: ")
        answer = row["completion"][0]["content"][0]["text"].split("; ")
        assert len(answer) == len(scene.objects)
        for line in answer:
            name, position, key = _found_line(line)
            keyed += key is not None
            assert name in object_names(scene, position) and " is in the " not in line
            lines += 1
    assert lines >= 40 and keyed >= 10


def test_rewrite_lookup_finds_every_object_the_instruction_names_riddles_included_in_the_cell_the_image_holds_it_in():
    """After the cells (as the image shows them), each "X is in the Y" line: X is said in the instruction and names the
    object the image holds in Y; riddles ("the shape with three sides") are looked up too, not only canonical names."""
    from refine.shapes.instructions import object_names
    from refine.shapes.judge import parse_scene
    from refine.shapes.vlm.tasks import describe_cells, rewrite_lookup_example
    from refine.shapes.world import POSITION_NAMES
    cells = {name: position for position, name in POSITION_NAMES.items()}
    riddles = lines = 0
    for case in itertools.islice(training_stream(9, indirect_fraction=1.0), 80):
        row = rewrite_lookup_example(case)
        scene = parse_scene(row["images"][0])
        think = row["completion"][0]["content"][0]["text"].removeprefix("<think>").split("</think>")[0]
        grid, _, looked_up = think.partition(". ")
        assert grid == describe_cells(scene)
        for line in filter(None, looked_up.split("; ")):
            if " is in the " in line:
                name, cell = line.split(" is in the ")
                assert name in case.instruction and name in object_names(scene, cells[cell])
                riddles += "shape with" in name or "shape like" in name or "colour of" in name or "round" in name
                lines += 1
    assert lines >= 40 and riddles >= 10


def test_rewrite_find_puts_the_cell_the_image_holds_each_named_object_in_right_after_its_name():
    """No cells written first; each "X [K] Y" line: X is said in the instruction and names the object the image holds
    in cell Y, with only X's key K between them (a name with a colour and a shape has one); riddles are found too."""
    from refine.shapes.instructions import object_names
    from refine.shapes.judge import parse_scene
    from refine.shapes.vlm.tasks import rewrite_find_example
    riddles = lines = keyed = 0
    for case in itertools.islice(training_stream(9, indirect_fraction=1.0), 80):
        row = rewrite_find_example(case)
        scene = parse_scene(row["images"][0])
        think = row["completion"][0]["content"][0]["text"].removeprefix("<think>").split("</think>")[0]
        for line in filter(None, think.split("; ")):
            if line.startswith(("directly ", "the object ")) and ": " in line:
                continue   # what a relation points at, or the object in a named cell
            name, position, key = _found_line(line)
            keyed += key is not None
            assert name in case.instruction and name in object_names(scene, position) and " in the " not in name
            riddles += "shape with" in name or "shape like" in name or "colour of" in name or "round" in name
            lines += 1
    assert lines >= 40 and riddles >= 10 and keyed >= 10


def test_rewrite_locate_names_each_object_of_the_instruction_with_the_cell_it_is_in():
    """Every "X is in the Y" line: Y holds, in the image read back, the one object X names, and X is in the instruction;
    every cell of the reasoning's first part says what the image shows there."""
    from refine.shapes.judge import parse_scene
    from refine.shapes.vlm.tasks import rewrite_locate_example
    from refine.shapes.world import POSITION_NAMES
    cells = {name: position for position, name in POSITION_NAMES.items()}
    lines = 0
    for case in itertools.islice(training_stream(8, indirect_fraction=1.0), 60):
        row = rewrite_locate_example(case)
        scene = parse_scene(row["images"][0])
        think = row["completion"][0]["content"][0]["text"].removeprefix("<think>").split("</think>")[0]
        grid, _, located = think.partition(". ")
        for entry, position in zip(grid.split("; "), POSITION_NAMES):
            obj = scene.at(position)
            assert entry == f"{'nothing' if obj is None else f'{obj.size} {obj.color} {obj.shape}'} in the {POSITION_NAMES[position]}"
        for line in filter(None, located.split("; ")):
            name, cell = line.split(" is in the ")
            obj = scene.at(cells[cell])
            words = set(name.split())
            named = [o for o in scene.objects if {o.color, o.shape} <= words and (o.size in words or not {"small", "large"} & words)]
            assert name in case.instruction and named == [obj]   # the one object the name fits is in that cell
            lines += 1
    assert lines >= 10   # 19 in these 60 cases


@pytest.mark.parametrize("read", [False, True])
def test_rewrite_scan_goes_through_the_cells_to_each_named_object_and_steps_from_it(read):
    """Read back from the image: a scan's "match" is the cell of the one object the name fits (every cell before it is
    "no", or with `read` says what is there), "directly above it" is the cell next to that one, and "the object in the
    Y" is what Y holds."""
    from refine.shapes.instructions import RELATIONS, STEPS
    from refine.shapes.judge import parse_scene
    from refine.shapes.vlm.tasks import rewrite_scan_example
    from refine.shapes.world import POSITION_NAMES
    cells = {name: position for position, name in POSITION_NAMES.items()}
    steps = {f"directly {relation} it": STEPS[direction] for direction, relation in RELATIONS.items()}
    seen = {"scan": 0, "beside": 0, "cell": 0}
    for case in itertools.islice(training_stream(8, indirect_fraction=1.0), 150):
        row = rewrite_scan_example(case, read=read)
        scene = parse_scene(row["images"][0])
        think = row["completion"][0]["content"][0]["text"].removeprefix("<think>").split("</think>")[0]
        last = None
        for line in filter(None, think.split("; ")):
            name, value = line.split(": ", 1)
            if name in steps:   # the cell next to the object just found
                assert cells[value] == (last[0] + steps[name][0], last[1] + steps[name][1])
                seen["beside"] += 1
            elif name.startswith("the object ") and name.endswith(" it"):   # the one object on that side of the one just found
                relation = name.removeprefix("the object ").removesuffix(" it")
                dr, dc = steps[f"directly {relation} it"]
                side = [o for o in scene.objects if o.position != last and ((o.position[0] - last[0]) * dr > 0 if dr else (o.position[1] - last[1]) * dc > 0)]
                assert [f"{o.size} {o.color} {o.shape}" for o in side] == [value]
            elif name.startswith("the object in the "):
                obj = scene.at(cells[name.removeprefix("the object in the ")])
                assert value == f"{obj.size} {obj.color} {obj.shape}"
                seen["cell"] += 1
            elif not name.startswith("the object "):
                if read:   # "top middle: large black square, ..., middle right: small green triangle match"
                    entries = [entry.split(": ") for entry in value.removesuffix(" match").split(", ")]
                    for cell, what in entries:
                        obj = scene.at(cells[cell])
                        assert what == ("nothing" if obj is None else f"{obj.size} {obj.color} {obj.shape}")
                    checked = [(cell, "no") for cell, _ in entries[:-1]] + [(entries[-1][0], "match")] * value.endswith(" match")
                else:
                    checked = [entry.rsplit(" ", 1) for entry in value.split(", ")]
                assert [verdict for _, verdict in checked] == ["no"] * (len(checked) - 1) + ["match"]
                assert [cell for cell, _ in checked] == [POSITION_NAMES[p] for p in list(POSITION_NAMES)[:len(checked)]]
                last = cells[checked[-1][0]]
                words = set(name.split())
                fits = [o.position for o in scene.objects if {o.color, o.shape} <= words or
                        {"largest", "biggest"} & words and o.size == "large" or "smallest" in words and o.size == "small"]
                if not {"small", "large"} & words:
                    assert fits == [last]   # the one object the name fits, in the cell the scan stopped at
                seen["scan"] += 1
    assert min(seen.values()) >= 3, seen


def _tiny_config(folder, **changes):
    config = dict(output_dir=str(folder), model={"tiny": True}, batch_size=4, learning_rate=3e-3, warmup_steps=0,
                  logging_steps=1, save_steps=2, progress=False,
                  data={"cases": 6, "seeing_per_case": 2, "judge_per_case": 1, "editor": False})
    return VLMTrainConfig(**{**config, **changes})


@pytest.mark.slow(minutes=0.5)
def test_sft_training_lowers_the_loss(tmp_path):
    train(_tiny_config(tmp_path, max_steps=30, save_steps=100))
    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    assert AutoModelForImageTextToText.from_pretrained(tmp_path / "final") is not None
    # TRL's SFTConfig defaults to bf16, which would pin accelerate's process-wide state to bf16 and
    # make every later trainer in this process (make_accelerator("no")) fail: the VLM trains in fp32
    assert make_accelerator("no").mixed_precision == "no"


def test_resume_from_a_checkpoint_reproduces_the_uninterrupted_run(tmp_path):
    summary = train(_tiny_config(tmp_path, max_steps=6))
    straight = load_file(tmp_path / "final" / "model.safetensors")
    # interrupt after step 4: drop what came later, then resume
    for later in ("checkpoint-6", ):
        for path in sorted((tmp_path / "checkpoints" / later).rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        (tmp_path / "checkpoints" / later).rmdir()
    resumed_summary = train(_tiny_config(tmp_path, max_steps=6, resume_from="latest"))
    resumed = load_file(tmp_path / "final" / "model.safetensors")
    assert summary["global_step"] == resumed_summary["global_step"] == 6
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, msg=name)
    init = load_file(tmp_path / "init" / "model.safetensors")
    assert any(not torch.equal(init[name], straight[name]) for name in init)   # training changed the weights


def _cli(argv, capsys):
    try:
        main(argv)
        code = 0
    except SystemExit as exit:
        code = exit.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_refine_train_vlm_runs_the_preset_and_writes_a_loadable_model(tmp_path, capsys):
    overrides = [f"output_dir={tmp_path}", "model.tiny=true", "max_steps=2", "batch_size=2", "save_steps=1", "progress=false",
                 "data.cases=2", "data.seeing_per_case=1", "data.judge_per_case=1", "data.editor=false"]
    code, out, _ = _cli(["train", "vlm", "--config", "examples/configs/vlm/shapes.yaml", *overrides], capsys)
    assert code == 0
    assert json.loads(out)["global_step"] == 2
    assert AutoProcessor.from_pretrained(tmp_path / "final").image_processor.patch_size == 4
    code, _, err = _cli(["train", "vlm", "--config", "examples/configs/vlm/shapes.yaml", "--resume", *overrides, "resume_from=latest"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "resume_from" in err


def _weights(folder):
    return load_file(folder / "model.safetensors")


def _changed(before, after, keep) -> dict[str, float]:
    """Largest absolute change of each tensor whose saved name passes `keep`."""
    return {name: float((after[name] - before[name]).abs().max()) for name in before if keep(name)}


@pytest.mark.parametrize("freeze", ["tower", "tower_and_merger"])
def test_a_frozen_vision_tower_does_not_change_while_the_language_model_learns(tmp_path, tiny_dir, freeze):
    train(_tiny_config(tmp_path, init_from=str(tiny_dir), max_steps=2, save_steps=100, freeze_vision=True,
                       freeze_merger=freeze == "tower_and_merger"))
    before, after = _weights(tiny_dir), _weights(tmp_path / "final")
    tower = _changed(before, after, lambda n: "visual." in n and "merger." not in n)
    merger = _changed(before, after, lambda n: "merger." in n)
    text = _changed(before, after, lambda n: "visual." not in n)
    assert tower and max(tower.values()) == 0.0
    assert max(merger.values()) == 0.0 if freeze == "tower_and_merger" else max(merger.values()) > 0.0
    assert max(text.values()) > 0.0


def test_reinit_language_keeps_the_tower_and_trains_an_untied_language_model_that_resumes(tmp_path, tiny_dir):
    train(_tiny_config(tmp_path, init_from=str(tiny_dir), max_steps=1, save_steps=1, reinit_language=True, freeze_vision=True,
                       freeze_merger=True))
    before, after = _weights(tiny_dir), _weights(tmp_path / "final")
    assert max(_changed(before, after, lambda n: "visual." in n).values()) == 0.0
    final = AutoModelForImageTextToText.from_pretrained(tmp_path / "final")
    assert not final.config.tie_word_embeddings and final.lm_head.weight is not final.model.language_model.embed_tokens.weight
    assert 0.8 < final.model.language_model.embed_tokens.weight.std().item() < 1.2      # N(0, 1), not the tiny model's N(0, 0.02)
    summary = train(_tiny_config(tmp_path, init_from=str(tiny_dir), max_steps=2, save_steps=1, reinit_language=True,
                                 freeze_vision=True, freeze_merger=True, resume_from="latest"))
    assert summary["global_step"] == 2


def test_grow_depth_trains_a_deeper_model_that_starts_from_the_old_one(tmp_path, tiny_dir):
    """grow_depth=2: each layer is followed by a copy whose output projections start at zero and then learn;
    the final folder is the deeper model for plain transformers; a resumed run grows before loading its checkpoint."""
    layers = AutoModelForImageTextToText.from_pretrained(tiny_dir).config.text_config.num_hidden_layers
    train(_tiny_config(tmp_path, init_from=str(tiny_dir), max_steps=2, save_steps=1, grow_depth=2, freeze_vision=True))
    before, after = _weights(tiny_dir), _weights(tmp_path / "final")
    assert AutoModelForImageTextToText.from_pretrained(tmp_path / "final").config.text_config.num_hidden_layers == 2 * layers
    for i in range(layers):   # layer i is now layer 2i; its copy, 2i + 1, started from its weights with zero outputs
        copy = f"model.layers.{2 * i + 1}."   # the saved (checkpoint) names
        original = f"model.layers.{i}."
        assert float(after[copy + "self_attn.o_proj.weight"].abs().max()) > 0.0   # learnt from zero
        assert after[copy + "self_attn.o_proj.weight"].abs().max() < before[original + "self_attn.o_proj.weight"].abs().max()
    summary = train(_tiny_config(tmp_path, init_from=str(tiny_dir), max_steps=3, save_steps=1, grow_depth=2, freeze_vision=True,
                                 resume_from="latest"))
    assert summary["global_step"] == 3


def test_vision_lr_scale_slows_the_vision_parameters_only(tmp_path, tiny_dir):
    # one AdamW step moves every parameter by about its learning rate (Adam normalises the gradient)
    train(_tiny_config(tmp_path, init_from=str(tiny_dir), max_steps=1, save_steps=100, vision_lr_scale=0.01))
    before, after = _weights(tiny_dir), _weights(tmp_path / "final")
    vision = max(_changed(before, after, lambda n: "visual." in n).values())
    text = max(_changed(before, after, lambda n: "visual." not in n).values())
    assert 0.0 < vision < 0.05 * text


def test_image_dependence_is_logged_while_training(tmp_path, tiny_dir):
    train(_tiny_config(tmp_path, init_from=str(tiny_dir), max_steps=2, save_steps=100, probe_every=2))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    probed = [r for r in records if "image_dependence" in r]
    assert [r["step"] for r in probed] == [2] and probed[0]["image_dependence"] > 0.0


def test_near_misses_are_other_labels_under_the_cases_own_prompt():
    config = dict(cases=10, seeing_per_case=0, judge_per_case=4, editor=False, judge_kinds={"score": 1.0})
    plain = build_dataset(VLMDataConfig(**config))
    assert not any(t.endswith((":same_category", ":collateral", ":half_edit")) for t in plain["task"])
    dataset = build_dataset(VLMDataConfig(**config, near_misses=True))
    misses = [row for row in dataset if row["task"].endswith((":same_category", ":collateral", ":half_edit"))]
    assert len(misses) >= 8
    # a near miss is scored below a perfect edit (mostly in between: part of the edit or the rest of the scene is right)
    assert sum(row["overall"] < 1.0 for row in misses) >= 0.8 * len(misses)
    assert any(0.0 < row["overall"] < 1.0 for row in misses)
    # ... under the same prompt as the case's perfect edit, so the text alone cannot tell them apart
    for row in misses[:3]:
        case = next(c for c in itertools.islice(training_stream(23), 10) if c.id == row["case_id"])
        perfect = judge_example(case, case.target_image, "score", random.Random(0))
        assert perfect["prompt"] == row["prompt"] and perfect["overall"] == 1.0


def test_the_grid_task_names_every_cell_of_the_shown_scene_and_weights_pick_the_tasks():
    source = Scene("white", (Obj("circle", "red", "large", (0, 0)), Obj("square", "blue", "small", (2, 1))))
    case = ShapeCase.build("hand", source, Recolor((0, 0), "green"), "make the red circle green", "direct")
    rows = seeing_examples(case, random.Random(0), per_case=12, tasks={"grid": 1.0}, degrade_rate=0.0)
    assert {row["task"] for row in rows} == {"grid"}
    truths = {render(case.source).tobytes(): "top left corner: large red circle", render(case.target).tobytes(): "top left corner: large green circle"}
    for row in rows:
        cells = row["completion"][0]["content"][0]["text"].split("; ")
        assert len(cells) == 9 and cells[0] == truths[row["images"][0].tobytes()]   # the answer is about the image shown
        assert cells[7] == "bottom middle: small blue square" and cells[4] == "center: nothing"
    assert len({row["images"][0].tobytes() for row in rows}) == 2                     # source and target both asked
    mixed = seeing_examples(case, random.Random(0), per_case=60, tasks={"grid": 3.0, "count": 1.0})
    assert {row["task"] for row in mixed} == {"grid", "count"}
    assert sum(row["task"] == "grid" for row in mixed) > 30
    # unweighted: the six original tasks only (the presets' datasets are unchanged)
    assert "grid" not in {row["task"] for row in seeing_examples(case, random.Random(0), per_case=60)}


def test_the_seeing_task_weights_are_checked_and_reach_the_dataset():
    with pytest.raises(ValidationError, match="unknown seeing tasks"):
        VLMDataConfig(seeing_tasks={"grid": 1.0, "cells": 1.0})
    dataset = build_dataset(VLMDataConfig(cases=3, seeing_per_case=2, judge_per_case=0, editor=False,
                                          seeing_tasks={"grid": 1.0}, degrade_rate=0.0))
    assert dataset["task"] == ["grid"] * 6


@pytest.mark.parametrize("interleaved", [False, True])
def test_interleaved_mrope_lets_the_language_model_tell_visual_tokens_of_different_columns_apart(tmp_path, interleaved):
    folder = build_shapes_vlm(tmp_path, dataclasses.replace(VLMSize(), interleaved_mrope=interleaved))
    model = AutoModelForImageTextToText.from_pretrained(folder)           # plain transformers reads the sections back
    rotary = model.model.language_model.rotary_emb
    # two visual tokens of one row, 3 merged columns apart; (time, height, width) position ids
    position_ids = torch.tensor([[[5, 5]], [[5, 5]], [[5, 8]]])
    cos, sin = rotary(torch.zeros(1, dtype=torch.float32), position_ids)   # (3 axes folded, 1, 2, head_dim)
    angle = torch.atan2(sin[0, 1] * cos[0, 0] - cos[0, 1] * sin[0, 0], cos[0, 1] * cos[0, 0] + sin[0, 1] * sin[0, 0])
    if interleaved:
        assert angle.abs().max() > 1.0        # some frequency turns the two tokens' keys apart
    else:
        assert angle.abs().max() < 0.01       # Qwen2.5-VL's block layout gives width only the slowest frequencies here
    # text (equal ids on the three axes) is rotated the same either way
    text = torch.tensor([[[3, 9]]] * 3)
    reference = AutoModelForImageTextToText.from_pretrained(build_shapes_vlm(tmp_path / "ref", VLMSize()))
    assert torch.allclose(rotary(torch.zeros(1), text)[0], reference.model.language_model.rotary_emb(torch.zeros(1), text)[0])


CELL_GEOMETRY = {"tiny": True, "image_side": 48, "patch_size": 8}


@pytest.mark.slow(minutes=0.5)
def test_tower_pretraining_teaches_the_tower_the_cells_and_leaves_the_language_model_alone(tmp_path):
    folder = build_shapes_vlm(tmp_path / "cells", dataclasses.replace(VLMSize.tiny(), image_side=48, patch_size=8))
    model, processor = AutoModelForImageTextToText.from_pretrained(folder), AutoProcessor.from_pretrained(folder)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    rows = pretrain_tower(model, processor, TowerPretrainConfig(steps=150, batch_size=16, learning_rate=3e-3, eval_scenes=96, log_every=150))
    held_out = rows[-1]
    # held-out scenes of another stream: the tower now says what colour is in each cell, which the
    # majority answer ("nothing", about 70% of the cells) cannot
    assert held_out["tower_eval_acc_color"] > held_out["tower_eval_majority_color"] + 0.15     # 0.98 against 0.72
    assert held_out["tower_eval_acc_background"] > 0.9 > held_out["tower_eval_majority_background"] + 0.5
    after = dict(model.named_parameters())
    moved = {name for name in before if not torch.equal(before[name], after[name])}
    assert moved and all(".visual." in f".{name}" for name in moved)


@pytest.mark.slow(minutes=0.3)
def test_the_position_head_writes_each_tokens_cell_into_its_content(tmp_path):
    # the tower's attention is relative (2-D rotary): a token's own cell is not in its content until trained to be
    size = dataclasses.replace(VLMSize.tiny(), image_side=48, patch_size=8, vision_hidden_size=64, vision_heads=4)
    folder = build_shapes_vlm(tmp_path / "cells", size)
    model, processor = AutoModelForImageTextToText.from_pretrained(folder), AutoProcessor.from_pretrained(folder)
    config = TowerPretrainConfig(steps=450, batch_size=16, learning_rate=3e-3, eval_scenes=96, log_every=450, position_head=True)
    held_out = pretrain_tower(model, processor, config)[-1]
    assert held_out["tower_eval_acc_cell"] > 0.3 > held_out["tower_eval_majority_cell"] + 0.15    # ~0.48 against 1/9


def test_the_tower_can_train_on_editor_outputs_labelled_by_the_exact_parser(tmp_path, monkeypatch):
    from refine.shapes.judge import parse_scene
    from refine.shapes.vlm import tower as tower_module
    pool = tower_module._output_pool(5, 3)
    assert len(pool) == 3 and all(parsed.scene == parse_scene(image) for image, parsed in pool)
    seen = []
    real = tower_module.visual_tokens
    monkeypatch.setattr(tower_module, "visual_tokens", lambda m, p, images: seen.append(list(images)) or real(m, p, images))
    folder = build_shapes_vlm(tmp_path / "cells", dataclasses.replace(VLMSize.tiny(), image_side=48, patch_size=8))
    model, processor = AutoModelForImageTextToText.from_pretrained(folder), AutoProcessor.from_pretrained(folder)
    rows = pretrain_tower(model, processor, TowerPretrainConfig(steps=2, batch_size=4, outputs=0.5, output_pool=2, eval_scenes=3,
                                                               log_every=1, clutter_head=True))
    editor = [image.tobytes() for image, _ in tower_module._output_pool(TowerPretrainConfig().seed, 2)]
    assert [image.tobytes() for image in seen[0][2:]] == editor and [image.tobytes() for image in seen[1][2:]] == editor
    assert all(image.tobytes() not in editor for image in seen[0][:2])      # the rest of the batch: clean renders
    assert {"tower_eval_outputs_acc_shape", "tower_eval_acc_shape", "tower_eval_outputs_acc_clutter"} <= set(rows[-1])


def test_the_clutter_labels_are_the_parsers_stray_marks_and_none_on_clean_renders():
    from refine.shapes.degrade import noise_image
    from refine.shapes.judge import parse_image
    from refine.shapes.vlm.tower import cell_targets
    scene = next(iter(training_stream(3))).source
    assert cell_targets(scene)["clutter"].tolist() == [0] * 9
    parsed = parse_image(noise_image(32, seed=0))          # pure noise: stray marks everywhere the parser looks
    flags = tuple(cell.clutter for cell in parsed.cells)
    assert any(flags) and cell_targets(parsed.scene, flags)["clutter"].tolist() == [int(f) for f in flags]


def test_tower_pretraining_needs_one_token_per_cell(tiny_dir):
    model, processor = AutoModelForImageTextToText.from_pretrained(tiny_dir), AutoProcessor.from_pretrained(tiny_dir)
    with pytest.raises(ConfigError, match="image_side=48 model.patch_size=8"):
        pretrain_tower(model, processor, TowerPretrainConfig(steps=1))


def test_a_tower_stage_runs_once_before_sft_and_sft_starts_from_its_tower(tmp_path):
    config = _tiny_config(tmp_path, model=CELL_GEOMETRY, tower={"steps": 2, "batch_size": 4, "eval_scenes": 8}, max_steps=1,
                          save_steps=100, freeze_vision=True, freeze_merger=True)
    train(config)
    init, tower, final = _weights(tmp_path / "init"), _weights(tmp_path / "tower"), _weights(tmp_path / "final")
    assert max(_changed(init, tower, lambda n: "visual." in n).values()) > 0.0         # the tower stage trained the tower
    assert max(_changed(tower, final, lambda n: "visual." in n).values()) == 0.0       # SFT (frozen) kept exactly that tower
    rows = [json.loads(line) for line in (tmp_path / "tower_metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["tower_step"] == 2 and "tower_eval_acc_shape" in rows[-1]
    stamp = (tmp_path / "tower" / "model.safetensors").stat().st_mtime_ns
    train(config)                                                                         # a rerun reuses the tower
    assert (tmp_path / "tower" / "model.safetensors").stat().st_mtime_ns == stamp


def test_the_seeing_preset_draws_seeing_rows_only_with_the_grid_question():
    config = load_config(VLMTrainConfig, "examples/configs/vlm/shapes-seeing.yaml", ["data.cases=8", "model.interleaved_mrope=true"])
    assert config.model.size().interleaved_mrope
    tasks = build_dataset(config.data)["task"]
    assert len(tasks) == 24 and not any(t.startswith("judge") for t in tasks) and "grid" in tasks


@pytest.mark.parametrize("preset", sorted(p.name for p in Path("examples/configs/vlm").glob("*.yaml")))
def test_every_vlm_preset_loads_and_a_misspelt_key_is_refused(preset):
    config = load_config(VLMTrainConfig, f"examples/configs/vlm/{preset}", [])
    assert config.max_steps > 0 and config.output_dir.startswith("runs/")
    with pytest.raises(Exception, match="max_stepz"):
        load_config(VLMTrainConfig, f"examples/configs/vlm/{preset}", ["max_stepz=3"])
