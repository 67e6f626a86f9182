"""The local transformers backend on the tiny Qwen-VL fixtures: exact logit scoring, batching, padding."""

from __future__ import annotations

import pytest
import torch

from refine.errors import ArtifactError, ConfigError
from refine.rewards.backends.transformers_vlm import TransformersVLM
from refine.rewards.mllm import MLLMJudge, parse_score, reasoning_prefill
from refine.testing import tiny_vlm_dir

INSTRUCTIONS = [
    "make the circle blue",
    "remove the ball",
    "add a small red square in the top left corner of the picture, next to the circle",
    "move it",
]


def items(make_scene, n):
    sources = [make_scene(i) for i in range(n)]
    outputs = [make_scene(i + 5) for i in range(n)]
    instructions = [INSTRUCTIONS[i % len(INSTRUCTIONS)] for i in range(n)]
    metas = [{"task_type": t} for t in ("recolor", "remove", "add", "move")[:n]] + [{}] * max(0, n - 4)
    return sources, outputs, instructions, metas


def hand_probs(vlm, judge, src, out, instruction, meta, prefill, candidates):
    """By hand: render the prompt as text, append `prefill`, run the full forward, softmax over the
    vocabulary, then the `candidates`' probabilities (K,)."""
    processor, model = vlm.processor, vlm.model
    conversation = judge.conversation(src, out, judge.user_text(instruction, meta))
    text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False) + prefill
    inputs = processor(text=[text], images=[src, out], return_tensors="pt")
    with torch.no_grad():
        logits = vlm.model(**inputs).logits[0, -1]  # (V,)
    ids = [processor.tokenizer.convert_tokens_to_ids(c) for c in candidates]
    return logits.softmax(-1)[ids]  # (K,)


def hand_greedy_text(vlm, judge, src, out, instruction, meta, max_new_tokens):
    """By hand: the model's greedy continuation of the rendered prompt, decoded."""
    processor = vlm.processor
    conversation = judge.conversation(src, out, judge.user_text(instruction, meta))
    text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[src, out], return_tensors="pt")
    with torch.no_grad():
        ids = vlm.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.tokenizer.decode(ids[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def expected_score(p):  # (6,) probabilities of "0".."5" -> the renormalised expectation / 5
    return float((p / p.sum() * torch.arange(6)).sum() / 5)


DIGITS = [str(d) for d in range(6)]


def test_score_logit_equals_a_hand_computation_from_the_logits(local_vlm, make_scene):
    judge = MLLMJudge(local_vlm, mode="score_logit", cache=False)
    src, out, instruction, meta = make_scene(1), make_scene(2), "make the circle blue", {"task_type": "recolor"}
    result = judge([src], [out], [instruction], [meta])

    p = hand_probs(local_vlm, judge, src, out, instruction, meta, '"Score": [[', DIGITS)
    assert result.scores[0] == pytest.approx(expected_score(p), abs=1e-6)
    assert result.details[0]["mass"] == pytest.approx(float(p.sum()), abs=1e-6)


def test_batched_scoring_equals_item_by_item(local_vlm, make_scene):
    judge = MLLMJudge(local_vlm, mode="score_logit", cache=False)
    args = items(make_scene, 5)
    batched = judge(*args).scores
    one_by_one = [judge(*(a[i : i + 1] for a in args)).scores[0] for i in range(5)]
    assert batched == pytest.approx(one_by_one, abs=1e-5)
    assert len(set(round(s, 6) for s in batched)) > 1  # the inputs actually matter


def test_left_padding_does_not_change_scores(local_vlm, make_scene):
    short = (make_scene(3), make_scene(4), "move it")
    long = (make_scene(5), make_scene(6), "add " + "a very long and detailed description, " * 6)
    conversations = [MLLMJudge(local_vlm).conversation(*s) for s in (short, long)]
    encoded = local_vlm._encode(conversations, ['"Score": [['] * 2)
    assert encoded["attention_mask"][0, 0] == 0 and encoded["attention_mask"][1].all()  # short one is left-padded
    alone = local_vlm.next_token_probs(conversations[:1], ["0", "1", "2", "3", "4", "5"], '"Score": [[')[0]
    padded = local_vlm.next_token_probs(conversations, ["0", "1", "2", "3", "4", "5"], '"Score": [[')[0]
    assert padded.mass == pytest.approx(alone.mass, abs=1e-6)
    assert [padded.probs[k] for k in alone.probs] == pytest.approx(list(alone.probs.values()), abs=1e-5)


def test_yesno_logit_is_p_yes_renormalised_over_yes_and_no(local_vlm, make_scene):
    judge = MLLMJudge(local_vlm, mode="yesno_logit", cache=False)
    src, out, instruction, meta = make_scene(3), make_scene(4), "remove the ball", {"task_type": "remove"}
    result = judge([src], [out], [instruction], [meta])
    p_yes, p_no = hand_probs(local_vlm, judge, src, out, instruction, meta, '"Judgement": [[', ["Yes", "No"]).tolist()
    assert result.scores[0] == pytest.approx(p_yes / (p_yes + p_no), abs=1e-6)


def test_score_sample_parses_the_greedy_answer(local_vlm, make_scene):
    # The random tiny model writes no valid score: the mode must hand back its exact greedy text,
    # a None score and the parser's reason (parsing valid answers: tests/rewards/test_mllm.py).
    judge = MLLMJudge(local_vlm, mode="score_sample", max_new_tokens=6, cache=False)
    src, out, instruction, meta = make_scene(1), make_scene(2), "make the circle blue", {"task_type": "recolor"}
    result = judge([src], [out], [instruction], [meta])
    text = hand_greedy_text(local_vlm, judge, src, out, instruction, meta, max_new_tokens=6)
    assert result.details[0]["raw"] == text and text
    value, reason = parse_score(text, 0, 5)
    assert (result.scores[0], result.details[0].get("error")) == (None if value is None else value / 5, reason)


def test_score_logit_cot_reads_the_score_after_the_generated_reasoning(local_vlm, make_scene):
    judge = MLLMJudge(local_vlm, mode="score_logit_cot", max_new_tokens=6, cache=False)
    src, out, instruction, meta = make_scene(5), make_scene(6), "move it", {"task_type": "move"}
    result = judge([src], [out], [instruction], [meta])
    reasoning = hand_greedy_text(local_vlm, judge, src, out, instruction, meta, max_new_tokens=6)
    assert result.details[0]["reasoning"] == reasoning
    p = hand_probs(local_vlm, judge, src, out, instruction, meta, reasoning_prefill(reasoning, '"Score": [['), DIGITS)
    assert result.scores[0] == pytest.approx(expected_score(p), abs=1e-6)
    # the reasoning is part of the prompt the score is read from: without it the score differs
    no_reasoning = hand_probs(local_vlm, judge, src, out, instruction, meta, '"Score": [[', DIGITS)
    assert result.scores[0] != pytest.approx(expected_score(no_reasoning), abs=1e-6)


def test_qwen3_vl_backend_score_logit_equals_a_hand_computation(make_scene):
    vlm = TransformersVLM(tiny_vlm_dir("qwen3_vl"))
    judge = MLLMJudge(vlm, mode="score_logit", cache=False)
    args = items(make_scene, 2)
    out = judge(*args)
    for i in range(2):
        p = hand_probs(vlm, judge, *(a[i] for a in args), '"Score": [[', DIGITS)
        assert out.scores[i] == pytest.approx(expected_score(p), abs=1e-6)


def test_max_pixels_bounds_the_vision_tokens(tiny_vlm_path, local_vlm, make_scene):
    small = TransformersVLM(tiny_vlm_path, max_pixels=16 * 16)
    conversation = [MLLMJudge(local_vlm).conversation(make_scene(0), make_scene(1), "x")]
    image_token = local_vlm.model.config.image_token_id
    count = lambda vlm: int((vlm._encode(conversation, None)["input_ids"] == image_token).sum())  # noqa: E731
    assert (count(local_vlm), count(small)) == (8, 2)  # 2 images x 4 tokens at 32x32, x 1 token at 16x16


def test_multi_token_candidates_are_refused(local_vlm):
    with pytest.raises(ConfigError, match="single-token"):
        local_vlm.candidate_ids(["10"])
    with pytest.raises(ArtifactError, match="no such folder"):  # a local path, not a hub id: no hub lookup
        TransformersVLM("/nonexistent/model")


def test_a_refine_assets_path_is_found_beside_the_package_and_a_missing_one_says_how_to_get_it(tiny_vlm_path, tmp_path, monkeypatch):
    import shutil

    from refine import paths

    install, elsewhere = tmp_path / "site-packages", tmp_path / "work"  # a wheel's layout; run from another folder
    shutil.copytree(tiny_vlm_path, install / "refine" / "assets" / "shapes-vlm")
    elsewhere.mkdir()
    monkeypatch.setattr(paths, "_PACKAGE_PARENT", install)
    monkeypatch.chdir(elsewhere)
    assert TransformersVLM("refine/assets/shapes-vlm").name == f"transformers:{install / 'refine' / 'assets' / 'shapes-vlm'}"
    shutil.rmtree(install / "refine" / "assets" / "shapes-vlm")
    with pytest.raises(ArtifactError, match=r"refine/assets/shapes-vlm: not bundled.*refine train vlm --config "
                                            r"examples/configs/vlm/shapes-judge-read\.yaml.*reward\.backend\.model="):
        TransformersVLM("refine/assets/shapes-vlm")


def test_device_map_reaches_from_pretrained_and_scores_like_the_plain_load(tiny_vlm_path, local_vlm, make_scene, monkeypatch):
    # device_map="auto" splits a large judge over GPUs; on a CPU-only machine "auto" places it on the CPU
    from transformers import AutoModelForImageTextToText

    seen, load = [], AutoModelForImageTextToText.from_pretrained
    monkeypatch.setattr(AutoModelForImageTextToText, "from_pretrained", lambda *a, **kw: seen.append(kw) or load(*a, **kw))
    mapped = TransformersVLM(tiny_vlm_path, device_map="auto", batch_size=32)
    assert seen[0]["device_map"] == "auto" and mapped.device == torch.device("cpu")
    assert seen[0]["dtype"] == torch.bfloat16  # "auto" dtype with a GPU-bound map
    args = items(make_scene, 3)
    plain = MLLMJudge(local_vlm, mode="score_logit", cache=False)(*args).scores
    assert MLLMJudge(mapped, mode="score_logit", cache=False)(*args).scores == pytest.approx(plain, abs=2e-3)  # bf16 vs fp32
    with pytest.raises(ConfigError, match="device_map needs a checkpoint path"):
        TransformersVLM(local_vlm.model, processor=local_vlm.processor, device_map="auto")


def test_generate_scored_gives_the_greedy_text_and_each_tokens_probability(local_vlm, make_scene):
    """The replies of generate(), split into pieces that rebuild them, each with the probability the
    model gave it at that step (by hand: generate with output_scores, softmax, the chosen token)."""
    chats = [[{"role": "user", "content": [{"type": "image", "image": make_scene(i)}, {"type": "text", "text": text}]}]
             for i, text in enumerate(INSTRUCTIONS)]  # prompts of different lengths: left padding in one batch
    scored = local_vlm.generate_scored(chats, max_new_tokens=12)
    assert [s.text for s in scored] == local_vlm.generate(chats, max_new_tokens=12)
    for chat, reply in zip(chats, scored):
        assert "".join(reply.pieces) == reply.text and len(reply.probs) == len(reply.pieces)
        inputs = local_vlm._encode([chat], None)
        with torch.no_grad():
            out = local_vlm.model.generate(**inputs, max_new_tokens=12, do_sample=False, output_scores=True, return_dict_in_generate=True)
        new = out.sequences[0, inputs["input_ids"].shape[1]:]
        by_hand = [float(step[0].softmax(-1)[token]) for step, token in zip(out.scores, new) if token != local_vlm.tokenizer.pad_token_id]
        assert reply.probs == pytest.approx(by_hand, abs=1e-4)
        assert 0 < reply.min_prob() < 1  # random weights: never certain of every token
