"""The bundled rewrite-only thinkers (`refine/assets/shapes-thinker`, the ShapeEdit VLM's rewrite stage, `shapes-thinker-scan` and `shapes-thinker-find`): plain
transformers loads it, it reads scenes, and `VLMThinker` rewrites with it.

Training-stream scenes only (seed 77: never a case of any split). Greedy decoding, so each count is
exact; the floors sit below what the bundle gets (grid 8 of 8, rewrites 6 of 8 at stop 41) so that a
broken bundle, processor or chat template fails, not a retrained model that is a little worse.
"""

import re
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

import refine
from refine._compat import ensure_torchvision_importable
from refine.shapes.data import stream_case
from refine.shapes.vlm.tasks import QUESTIONS, SYSTEM_PROMPT, describe_grid
from refine.thinker.config import ThinkerConfig, build_thinker
from refine.thinker.protocol import ThinkRequest

BUNDLE = Path(refine.__file__).parent / "assets" / "shapes-thinker"
ensure_torchvision_importable()  # each test may run alone (xdist): both load transformers' processors


def test_the_bundle_loads_with_plain_transformers_and_reads_the_grid():
    model = AutoModelForImageTextToText.from_pretrained(BUNDLE)
    processor = AutoProcessor.from_pretrained(BUNDLE, padding_side="left")
    assert model.num_parameters() * 4 < 40e6  # float32 under the 40 MB
    cases = [stream_case(77, i) for i in range(8)]
    chats = [[{"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
              {"role": "user", "content": [{"type": "image", "image": case.source_image}, {"type": "text", "text": QUESTIONS["grid"]}]}]
             for case in cases]
    inputs = processor.apply_chat_template(chats, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=96, do_sample=False)
    answers = processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    right = sum(answer.strip() == describe_grid(case.source) for answer, case in zip(answers, cases))
    assert right >= 6, list(zip(answers, [describe_grid(c.source) for c in cases]))


def _rewrite_stream_cases(bundle: str, prompt: str, max_new_tokens: int) -> tuple[list, int]:
    """The bundle's thoughts on 8 indirect stream cases (seed 77), as the loop's rewrite-only thinker, and how many are right."""
    config = ThinkerConfig(thinker=f"vlm:{BUNDLE.parent / bundle}", prompt=prompt, max_new_tokens=max_new_tokens, think_before_edit=True,
                           max_turns=1, select="last", critique_last_turn=False)
    cases = [stream_case(77, i, indirect_fraction=1.0) for i in range(8)]
    thoughts = build_thinker(config).think([ThinkRequest(case.source_image, None, case.instruction, case.instruction) for case in cases])
    right = sum(thought.instruction == case.direct_instruction for thought, case in zip(thoughts, cases))
    return [(t, c.direct_instruction) for t, c in zip(thoughts, cases)], right


def test_the_bundle_is_a_rewrite_only_thinker():
    pairs, right = _rewrite_stream_cases("shapes-thinker", "shapes-rewrite", max_new_tokens=48)
    assert right >= 4, [(t.instruction, wanted) for t, wanted in pairs]


def test_the_scan_bundle_finds_named_objects_before_it_rewrites():
    """`shapes-thinker-scan` answers in <think>/<answer>: the loop reads its reasoning apart from its rewrite (6 of 8 right at stop 45)."""
    pairs, right = _rewrite_stream_cases("shapes-thinker-scan", "shapes-rewrite-scan-read", max_new_tokens=256)
    assert right >= 4, [(t.instruction, wanted) for t, wanted in pairs]
    assert any(" match" in thought.reasoning for thought, _ in pairs)   # a scan, kept out of the instruction


def test_the_find_bundle_finds_named_objects_in_the_image_before_it_rewrites():
    """`shapes-thinker-find` writes each named object with its key and cell in <think> (stop 50), the rewrite in <answer>."""
    pairs, right = _rewrite_stream_cases("shapes-thinker-find", "shapes-rewrite-find", max_new_tokens=128)
    assert right >= 5, [(t.instruction, wanted) for t, wanted in pairs]
    keyed = [t.reasoning for t, _ in pairs if re.search(r" [A-Za-z] (top|middle|center|bottom)", t.reasoning or "")]
    assert keyed and all("<think>" not in t.instruction for t, _ in pairs)   # a name, its key, its cell; kept out of the rewrite
