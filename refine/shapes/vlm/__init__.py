"""The ShapeEdit VLM: a small Qwen2.5-VL-architecture model that sees ShapeEdit scenes, trained with TRL.

Modules: `tokenizer` (BPE trained on ShapeEdit's language), `model` (config + processor, 16
tokens per 32x32 scene), `tasks` (seeing and judge examples), `data` (HF datasets from the training
stream), `train` (TRL `SFTTrainer`, `refine train vlm`).
"""
