"""The tiny Grounding DINO: a real checkpoint folder, a tokenizer without unknown tokens for object names, seeded weights."""

import torch
from safetensors.torch import load_file

from refine.testing.tiny_detector import save_tiny_grounding_dino, tiny_grounding_dino_dir


def test_object_names_encode_without_unknown_tokens():
    path = tiny_grounding_dino_dir()  # builds it, after making torchvision importable (refine._compat)
    from transformers import GroundingDinoProcessor

    tokenizer = GroundingDinoProcessor.from_pretrained(path).tokenizer
    ids = tokenizer("painted white leaf pattern . brown fur bear . 4 glass fish .")["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.convert_ids_to_tokens(tokenizer("bench .")["input_ids"]) == ["[CLS]", "bench", ".", "[SEP]"]


def test_weights_are_seeded(tmp_path):
    a = load_file(save_tiny_grounding_dino(tmp_path / "a", seed=1) / "model.safetensors")
    b = load_file(save_tiny_grounding_dino(tmp_path / "b", seed=1) / "model.safetensors")
    c = load_file(save_tiny_grounding_dino(tmp_path / "c", seed=2) / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
