"""Can the ShapeEdit VLM learn EditThinker's rewrite by itself: (source image, instruction) -> direct phrasing?

    python benchmarks/shapes_vlm_rewrite_probe.py runs/vlm-pairs2/checkpoints/checkpoint-700 runs/rewrite-probe 6000 400

Arguments: base VLM folder, output folder, training-stream cases (seed 41, 80% indirect; never a
split's case), optimizer steps (batch 16, lr 1e-3, cosine, vision tower frozen, one thread). Prints a
few rewrites and the share of every third shapes-val indirect instruction (90) rewritten exactly into
its canonical direct phrasing (ground truth, used to measure only). An exploration for issue 24
(stop 36): the learned thinker wrote the format but not the user's edit, and this asks whether the
rewrite can be learned where data is unlimited.
"""

import itertools
import json
import sys

from refine._compat import ensure_torchvision_importable

ensure_torchvision_importable()

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import AutoModelForImageTextToText, AutoProcessor  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

from refine.shapes.data import load_split, training_stream  # noqa: E402
from refine.shapes.vlm.tasks import QUESTIONS  # noqa: E402

QUESTION = QUESTIONS["rewrite"]  # the `rewrite` seeing task's question (refine.shapes.vlm.tasks), without its system prompt


def row(case) -> dict:
    """One TRL conversational row: [source image, question] -> the case's canonical direct phrasing."""
    return {"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION.format(instruction=case.instruction)}]}],
            "completion": [{"role": "assistant", "content": [{"type": "text", "text": case.direct_instruction}]}],
            "images": [case.source_image]}


def main() -> None:
    base, out, n, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(1)
    cases = list(itertools.islice(training_stream(41, indirect_fraction=0.8), n))
    model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(base)
    for name, parameter in model.named_parameters():
        if ".visual." in f".{name}":
            parameter.requires_grad_(False)
    args = SFTConfig(output_dir=out, max_steps=steps, per_device_train_batch_size=16, learning_rate=1e-3, lr_scheduler_type="cosine",
                     warmup_steps=0.03, logging_steps=20, save_strategy="no", bf16=False, use_cpu=True, report_to=[],
                     completion_only_loss=True, disable_tqdm=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list([row(c) for c in cases]), processing_class=processor)
    trainer.train()

    model.eval()
    processor.tokenizer.padding_side = "left"  # generation continues every row from its end
    val = [c for c in load_split("shapes-val") if c.phrasing == "indirect"][::3]
    right = 0
    for start in range(0, len(val), 30):
        chunk = val[start : start + 30]
        texts = [processor.apply_chat_template(row(c)["prompt"], tokenize=False, add_generation_prompt=True) for c in chunk]
        inputs = processor(text=texts, images=[[c.source_image] for c in chunk], return_tensors="pt", padding=True)
        with torch.no_grad():
            generated = model.generate(**inputs, max_new_tokens=32, do_sample=False)
        replies = processor.batch_decode(generated[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        for j, (case, reply) in enumerate(zip(chunk, replies)):
            right += reply.strip() == case.direct_instruction
            if start == 0 and j < 6:
                print(f"{case.instruction!r} -> {reply.strip()!r} | want {case.direct_instruction!r}")
    losses = [h for h in trainer.state.log_history if "loss" in h]
    print(json.dumps({"val_indirect": len(val), "exact": right / len(val), 
                      "first_loss": losses[0]["loss"] if losses else None, "last_loss": losses[-1]["loss"] if losses else None}))


if __name__ == "__main__":
    main()
