"""VLMThinker: conversations, parsing of replies, and the full loop on the tiny random VLM."""

import pytest
from PIL import Image

from refine.editor import compose
from refine.errors import ConfigError
from refine.rewards.backends.base import ScoredText
from refine.rewards.backends.transformers_vlm import TransformersVLM
from refine.config import validate_config
from refine.shapes.vlm.tasks import QUESTIONS, SYSTEM_PROMPT
from refine.thinker.config import ThinkerConfig, build_thinker_refiner
from refine.thinker.loop import ThinkWhileEdit
from refine.thinker.prompts import get_prompts
from refine.thinker.protocol import ThinkRequest
from refine.thinker.vlm import VLMThinker
from refine.types import EditRequest, EditResult

SOURCE, EDITED = Image.new("RGB", (32, 32), "white"), Image.new("RGB", (32, 32), "gray")


class CannedBackend:
    """A backend replying from a list, one reply per conversation, recording what it was sent."""

    name = "canned"

    def __init__(self, replies):
        self.replies = list(replies)
        self.sent = []

    def generate(self, conversations, max_new_tokens=128, temperature=0.0):
        self.sent.append((list(conversations), max_new_tokens, temperature))
        return [self.replies.pop(0) for _ in conversations]

    def next_token_probs(self, conversations, candidates, prefill=""):
        raise NotImplementedError


def test_conversation_holds_the_paper_input_tuple():
    thinker = VLMThinker(CannedBackend([]), "thinker")
    chat = thinker.conversation(ThinkRequest(SOURCE, EDITED, "make it look like a tomato", "paint it red", 2))
    assert chat[0] == {"role": "system", "content": get_prompts("thinker").system}
    parts = chat[1]["content"]
    assert [p["type"] for p in parts] == ["image", "image", "text"]
    assert parts[0]["image"] is SOURCE and parts[1]["image"] is EDITED
    assert "Original instruction (what the user wants): make it look like a tomato" in parts[2]["text"]
    assert "(what produced Image 2): paint it red" in parts[2]["text"] and "<score>[semantic, quality]</score>" in parts[2]["text"]
    before = thinker.conversation(ThinkRequest(SOURCE, None, "make it look like a tomato", "make it look like a tomato", 0))
    assert [p["type"] for p in before[1]["content"]] == ["image", "text"] and "Before any edit" in before[1]["content"][1]["text"]
    expert = VLMThinker(CannedBackend([]), "expert").conversation(ThinkRequest(SOURCE, EDITED, "a", "b", 1))
    assert "<stop>yes or no</stop>" in expert[1]["content"][2]["text"]


def test_a_question_first_prompt_set_sends_the_question_before_the_source():
    plain = VLMThinker(CannedBackend([]), "shapes-rewrite").conversation(ThinkRequest(SOURCE, None, "paint it red", "paint it red", 0))
    first = VLMThinker(CannedBackend([]), "shapes-rewrite-qf").conversation(ThinkRequest(SOURCE, None, "paint it red", "paint it red", 0))
    assert [p["type"] for p in plain[1]["content"]] == ["image", "text"]
    assert [p["type"] for p in first[1]["content"]] == ["text", "image"] and first[1]["content"][1]["image"] is SOURCE
    assert first[1]["content"][0] == plain[1]["content"][1] and first[0] == plain[0]


def test_replies_are_parsed_in_one_batched_call():
    backend = CannedBackend(
        [
            "<think>grey, not red</think><score>[2, 8]</score><answer>paint it red</answer>",
            "<think>fine</think><stop>yes</stop><answer>paint it red</answer>",
            "no tags at all",
        ]
    )
    thinker = VLMThinker(backend, max_new_tokens=64, temperature=0.7)
    asks = [ThinkRequest(SOURCE, EDITED, "x", "x", 1)] * 3
    scored, stopped, garbage = thinker.think(asks)
    assert len(backend.sent) == 1 and backend.sent[0][1:] == (64, 0.7) and len(backend.sent[0][0]) == 3
    assert scored.instruction == "paint it red" and scored.scores == {"semantic": 2.0, "quality": 8.0} and scored.stop is None
    assert stopped.stop is True and stopped.scores == {}
    assert not garbage.ok and garbage.raw == "no tags at all" and garbage.instruction is None


def test_expert_stop_flag_ends_the_loop():
    backend = CannedBackend(["<think>not yet</think><stop>no</stop><answer>paint it red</answer>",
                             "<think>done</think><stop>yes</stop><answer>paint it red</answer>"])

    class Editor:
        def edit(self, requests):
            from refine.types import EditResult

            return [EditResult(EDITED, r.instruction) for r in requests]

    [result] = compose(Editor(), ThinkWhileEdit(VLMThinker(backend, "expert"))).edit([_request()])
    assert result.meta["thinker"]["stop_reason"] == "thinker_stop" and result.meta["thinker"]["editor_calls"] == 2
    # the expert gives no scores, so select="best" has nothing to rank by and keeps the last edit
    assert result.instruction == "paint it red" and result.meta["thinker"]["chosen_turn"] == 2


def _request():
    from refine.types import EditRequest

    return EditRequest(SOURCE, "make it look like a tomato", seed=0, meta={})


def test_backend_without_generate_is_refused():
    with pytest.raises(ConfigError, match="VLM backend with generate"):
        VLMThinker(object())


def test_image_size_pads_both_images_as_grpo_training_did():
    """A thinker GRPO-trained with `image_size` is served the same padded images (same `fit_image`)."""
    wide = Image.new("RGB", (64, 32), "red")
    backend = CannedBackend(["<think>ok</think><score>[9, 9]</score><answer>x</answer>"] * 2)
    thinker = VLMThinker(backend, image_size=(48, 48))
    thinker.think([ThinkRequest(wide, EDITED, "x", "x", 1), ThinkRequest(wide, None, "x", "x", 0)])
    critique, rewrite = backend.sent[0][0]
    source, edited = (part["image"] for part in critique[1]["content"][:2])
    assert source.size == edited.size == rewrite[1]["content"][0]["image"].size == (48, 48)
    assert source.getpixel((24, 4)) == (0, 0, 0) and source.getpixel((24, 24)) == (255, 0, 0)  # letterboxed, aspect kept
    plain = VLMThinker(CannedBackend([]))
    assert plain.conversation(ThinkRequest(wide, None, "x", "x", 0))[1]["content"][0]["image"] is wide  # default: untouched
    with pytest.raises(ConfigError, match="image_size"):
        VLMThinker(CannedBackend([]), image_size=(0, 48))
    configured = build_thinker_refiner(thinker="vlm:http://127.0.0.1:9/v1", image_size=[40, 40], api_key_env=None)
    assert configured.thinker.image_size == (40, 40)


def test_spec_picks_the_backend():
    served = VLMThinker.from_spec("http://127.0.0.1:9/v1#EditThinker-8B", api_key_env=None)
    assert served.backend.model == "EditThinker-8B" and served.name == "vlm:openai:http://127.0.0.1:9/v1"
    with pytest.raises(ConfigError, match="empty VLM spec"):
        VLMThinker.from_spec("  ")


def test_registry_builds_a_local_vlm_thinker_with_prompt_overrides(tiny_vlm_path):
    refiner = build_thinker_refiner(thinker=f"vlm:{tiny_vlm_path}", prompt="expert", critique_prompt="Judge: {instruction}", max_turns=2)
    assert isinstance(refiner.thinker.backend, TransformersVLM)
    assert refiner.thinker.prompts.critique == "Judge: {instruction}" and refiner.thinker.prompts.system == get_prompts("expert").system
    with pytest.raises(ConfigError, match="must contain \\{instruction\\}"):
        build_thinker_refiner(thinker=f"vlm:{tiny_vlm_path}", critique_prompt="Judge it")


def test_tiny_random_vlm_garbage_every_turn_returns_the_first_edit(tiny_vlm_backend, editor, request_for):
    """The random-weight VLM never emits the format: the loop keeps the first edit and says why."""
    thinker = VLMThinker(tiny_vlm_backend, max_new_tokens=6)
    requests = [request_for(), request_for(instruction="paint it blue")]
    results = compose(editor, ThinkWhileEdit(thinker, max_turns=5)).edit(requests)
    assert len(editor.batches) == 1 and [len(b) for b in editor.batches] == [2]
    for request, result in zip(requests, results):
        assert result.instruction == request.instruction and result.meta["thinker"]["stop_reason"] == "thinker_failed"
        assert result.meta["thinker"]["thinker_calls"] == 2
        think = [s for s in result.steps if s.kind == "think"][-1]
        assert think.info["raw"] and think.info["error"].startswith("no EditThinker tags")


class ScoredBackend(CannedBackend):
    """A canned backend that also gives token probabilities, one (piece, probability) list per reply."""

    def generate_scored(self, conversations, max_new_tokens=128, temperature=0.0):
        replies = [self.replies.pop(0) for _ in conversations]
        return [ScoredText("".join(p for p, _ in r), [p for p, _ in r], [q for _, q in r]) for r in replies]


def test_confidence_is_the_least_sure_token_of_the_refined_instruction():
    reply = [("<think>", 1.0), ("not", 0.05), (" red", 0.3), ("</think>", 1.0), ("<score>[2, 9]</score>", 1.0),
             ("<answer>", 1.0), ("paint", 0.9), (" it", 0.99), (" red", 0.7), ("</answer>", 0.2)]
    [thought] = VLMThinker(ScoredBackend([reply]), confidence=True).think([ThinkRequest(SOURCE, EDITED, "x", "x")])
    assert thought.instruction == "paint it red" and thought.confidence == 0.7  # not the critique's 0.05 or the closing tag's 0.2
    [plain] = VLMThinker(ScoredBackend([reply])).think([ThinkRequest(SOURCE, EDITED, "x", "x")])
    assert plain.confidence is None
    [whole] = VLMThinker(ScoredBackend([reply]), confidence=True, confidence_over="reply").think([ThinkRequest(SOURCE, EDITED, "x", "x")])
    assert whole.instruction == "paint it red" and whole.confidence == 0.05  # the reasoning's least sure token


def test_confidence_over_is_checked_and_reaches_the_thinker_from_the_config(tiny_vlm_path):
    with pytest.raises(ConfigError, match="confidence_over='think'"):
        VLMThinker(ScoredBackend([]), confidence=True, confidence_over="think")
    refiner = build_thinker_refiner(thinker=f"vlm:{tiny_vlm_path}", min_confidence=0.5, confidence_over="reply", max_new_tokens=6)
    assert refiner.thinker.confidence_over == "reply"


def test_confidence_needs_a_backend_with_token_probabilities():
    with pytest.raises(ConfigError, match="needs token probabilities"):
        VLMThinker(CannedBackend([]), confidence=True)


def test_min_confidence_builds_a_thinker_that_measures_it(tiny_vlm_path):
    refiner = build_thinker_refiner(thinker=f"vlm:{tiny_vlm_path}", min_confidence=0.5, max_new_tokens=6)
    assert refiner.thinker.confidence is True and refiner.config.min_confidence == 0.5
    [thought] = refiner.thinker.think([ThinkRequest(SOURCE, EDITED, "make it red", "make it red")])
    assert 0.0 < thought.confidence < 1.0  # random weights: garbage, judged whole (no <answer> tag)


def test_rewrite_only_thinker_asks_the_vlm_question_and_is_gated_before_one_edit():
    """prompt="shapes-rewrite": the ShapeEdit VLM's own rewrite question, the whole reply is the
    instruction and its confidence; the gate keeps the original where the model is unsure."""

    class Recorder:
        def __init__(self):
            self.instructions = []

        def edit(self, requests):
            self.instructions += [r.instruction for r in requests]
            return [EditResult(r.image, r.instruction) for r in requests]

    sure = [("move the red circle", 0.95), (" to the top left", 0.9)]
    unsure = [("add a blue", 0.9), (" square", 0.3)]
    kept = [("keep", 0.8)]  # the one-token keep reply: the user's instruction as it is
    backend = ScoredBackend([sure, unsure, kept])
    config = validate_config(ThinkerConfig, dict(thinker="vlm:/unused", prompt="shapes-rewrite", think_before_edit=True, max_turns=1,
                                                 select="last", critique_last_turn=False, min_confidence=0.5))
    thinker = VLMThinker(backend, config.prompt, confidence=True)
    recorder = Recorder()
    results = compose(recorder, ThinkWhileEdit(thinker, config.loop_config())).edit(
        [EditRequest(SOURCE, "move the sun-coloured circle up left"), EditRequest(SOURCE, "add a sky square"),
         EditRequest(SOURCE, "paint the square like grass")])
    assert recorder.instructions == ["move the red circle to the top left", "add a sky square", "paint the square like grass"]
    assert [r.meta["thinker"]["editor_calls"] for r in results] == [1, 1, 1]
    assert [s.info["confidence"] for r in results for s in r.steps if s.kind == "think"] == [0.9, 0.3, 0.8]
    chat = thinker.conversation(ThinkRequest(SOURCE, None, "add a sky square", "add a sky square", 0))
    assert chat[0]["content"] == SYSTEM_PROMPT and chat[1]["content"][-1]["text"] == QUESTIONS["rewrite"].format(
        instruction="add a sky square")
    with pytest.raises(ConfigError, match="only rewrites before the first edit"):
        thinker.conversation(ThinkRequest(SOURCE, EDITED, "x", "x", 1))


def test_rewrite_only_thinker_from_a_checkpoint_through_the_registry(tiny_vlm_path, editor, request_for):
    """The whole path on the tiny random VLM: config -> TransformersVLM -> generate_scored -> gate -> one edit."""
    settings = dict(thinker=f"vlm:{tiny_vlm_path}", prompt="shapes-rewrite", think_before_edit=True, max_turns=1, select="last",
                    critique_last_turn=False, max_new_tokens=6)
    request = request_for()
    sure = compose(editor, build_thinker_refiner(**settings, min_confidence=0.0)).edit([request])[0]
    unsure = compose(editor, build_thinker_refiner(**settings, min_confidence=1.0)).edit([request])[0]
    [think] = [s for s in sure.steps if s.kind == "think"]
    assert 0.0 < think.info["confidence"] < 1.0 and sure.instruction == think.instruction   # random weights: some text, used
    assert unsure.instruction == request.instruction and unsure.meta["thinker"]["editor_calls"] == 1   # below the gate: the user's words


@pytest.mark.parametrize("prompt, question", [("shapes-rewrite-think", "rewrite_think"), ("shapes-rewrite-grid", "rewrite_grid"),
                                                    ("shapes-rewrite-locate", "rewrite_locate"), ("shapes-rewrite-scan", "rewrite_scan"),
                                                    ("shapes-rewrite-scan-read", "rewrite_scan_read"), ("shapes-rewrite-lookup", "rewrite_lookup"),
                                                    ("shapes-rewrite-find", "rewrite_find")])
def test_rewrite_only_thinker_with_reasoning_reads_its_answer_and_the_answer_confidence(prompt, question):
    """The scene (or the grid) in <think>, not counted in the confidence; the rewrite in <answer>, asked in the VLM's words."""
    reply = [("<think>", 1.0), ("red background: small blue circle", 0.2), ("</think><answer>", 1.0), ("remove the blue circle", 0.8),
             ("</answer>", 1.0)]
    thinker = VLMThinker(ScoredBackend([reply]), prompt, confidence=True)
    [thought] = thinker.think([ThinkRequest(SOURCE, None, "delete the circle the colour of the sky", "x", 0)])
    assert (thought.instruction, thought.reasoning, thought.confidence) == ("remove the blue circle", "red background: small blue circle", 0.8)
    assert thinker.conversation(ThinkRequest(SOURCE, None, "x", "x", 0))[1]["content"][-1]["text"] == QUESTIONS[question].format(
        instruction="x")


@pytest.mark.slow
def test_full_loop_through_transformers_serve_on_loopback(served_tiny_vlm, editor, request_for):
    """EditThinker served over HTTP (here `transformers serve` with the tiny VLM on 127.0.0.1): one
    request per conversation reaches the server, and garbage every turn still returns the first edit."""
    base_url, model = served_tiny_vlm
    thinker = VLMThinker.from_spec(f"{base_url}#{model}", api_key_env=None, max_new_tokens=8)
    requests = [request_for(), request_for(instruction="paint it blue")]
    results = compose(editor, ThinkWhileEdit(thinker, max_turns=3, thinker_retries=0)).edit(requests)
    assert [len(b) for b in editor.batches] == [2] and thinker.backend.requests_sent == 2
    for request, result in zip(requests, results):
        assert result.instruction == request.instruction and result.meta["thinker"]["stop_reason"] == "thinker_failed"
        assert result.image.getpixel((0, 0)) == editor.edit([request])[0].image.getpixel((0, 0))
        think = [s for s in result.steps if s.kind == "think"][-1]
        assert isinstance(think.info["raw"], str) and think.info["raw"] and think.info["error"].startswith("no EditThinker tags")
