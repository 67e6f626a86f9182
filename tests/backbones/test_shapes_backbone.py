"""ShapesBackbone: exact codec, tokenizer, FlowBackbone conformance, save/load round trip."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from refine.backbones.base import FlowBackbone, concat_conditions
from refine.backbones.shapes import (
    ShapesBackbone,
    build_shapes_backbone,
    build_word_tokenizer,
    images_to_pixels,
    pack_pixels,
    unpack_pixels,
)
from refine.errors import ArtifactError, InputError
from refine.images import to_pil


def random_images(n, seed=0, size=32):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB") for _ in range(n)]


# -- pixel codec ---------------------------------------------------------------------------------


def test_codec_round_trip_is_exact_on_uint8_images():
    images = random_images(3)
    latents = pack_pixels(images_to_pixels(images))
    assert latents.shape == (3, 64, 48)
    assert latents.min() >= -1 and latents.max() <= 1
    decoded = unpack_pixels(latents, 32, 32)
    for image, pixels in zip(images, decoded):
        assert np.array_equal(np.asarray(to_pil(pixels)), np.asarray(image))


def test_packing_keeps_each_4x4_block_in_its_own_token():
    # Token (row, col) of the 8x8 grid must hold exactly the pixels of block (row, col): that is
    # the layout Qwen-Image's 2D RoPE assumes for packed latents.
    pixels = torch.zeros(1, 3, 32, 32)
    base = pack_pixels(pixels)
    for y, x in [(0, 0), (5, 30), (31, 2), (17, 17)]:
        poked = pixels.clone()
        poked[0, 1, y, x] = 1.0
        changed = (pack_pixels(poked) != base).any(dim=-1)[0].nonzero().flatten().tolist()
        assert changed == [(y // 4) * 8 + x // 4]


def test_codec_matches_transformer_channels(tiny_backbone):
    config = tiny_backbone.transformer.config
    assert config.in_channels == 48 and config.patch_size == 2
    assert config.patch_size**2 * config.out_channels == config.in_channels  # proj_out emits packed tokens
    assert tiny_backbone.latent_shape == (64, 48)


def test_bad_pixel_shapes_are_input_errors():
    with pytest.raises(InputError, match="multiples of 4"):
        pack_pixels(torch.zeros(1, 3, 30, 32))
    with pytest.raises(InputError, match="do not hold"):
        unpack_pixels(torch.zeros(1, 60, 48), 32, 32)


# -- tokenizer -----------------------------------------------------------------------------------


def test_tokenizer_lowercases_splits_punctuation_and_maps_unknown_words():
    tok = build_word_tokenizer(["make", "the", "red", "circle", "blue", ","], max_length=12)
    enc = tok.encode("Make the RED circle, ZORBLAX-blue!")
    assert enc.tokens[:9] == ["[CLS]", "make", "the", "red", "circle", ",", "[UNK]", "[UNK]", "blue"]
    assert enc.tokens[9] == "[UNK]"  # "!" is not in the vocabulary
    assert sum(enc.attention_mask) == 10 and len(enc.ids) == 12


def test_tokenize_never_crashes_and_has_fixed_length(tiny_backbone):
    texts = ["", "x" * 500, "añadir un círculo 🟥", " ".join(["the"] * 100), "make the red circle blue"]
    ids, mask = tiny_backbone.tokenize(texts)
    assert ids.shape == mask.shape == (5, tiny_backbone.max_text_length)
    assert mask[0].sum() == 1  # the empty instruction keeps its [CLS]
    assert mask[3].sum() == tiny_backbone.max_text_length  # truncated
    unk = tiny_backbone.tokenizer.token_to_id("[UNK]")
    assert (ids[2][mask[2].bool()][1:] == unk).all()
    assert (ids[4][1:6] != unk).all()  # ShapeEdit words are known


# -- FlowBackbone protocol -----------------------------------------------------------------------


def test_implements_flow_backbone_protocol(tiny_backbone, bench_images):
    images, instructions = bench_images
    assert isinstance(tiny_backbone, FlowBackbone)
    assert tiny_backbone.name == "shapes" and isinstance(tiny_backbone.transformer, torch.nn.Module)
    cond = tiny_backbone.encode_condition(images, instructions, guidance=3.0)
    b, length = len(images), tiny_backbone.max_text_length
    assert cond.text.shape == (b, length, 32) and cond.text_mask.shape == (b, length)
    assert cond.image_latents.shape == (b, 64, 48) and cond.latent_shape == (64, 48)
    assert cond.image_size == (32, 32) and len(cond.extras["img_shapes"]) == b
    assert cond.negative is not None and (cond.negative.text_mask.sum(dim=1) == 1).all()
    assert tiny_backbone.encode_condition(images, instructions, guidance=1.0).negative is None
    sigmas = tiny_backbone.sigmas(5, cond)
    assert sigmas.shape == (6,) and sigmas[0] == 1 and sigmas[-1] == 0 and (sigmas.diff() < 0).all()
    x = tiny_backbone.prepare_noise(cond, torch.Generator().manual_seed(0))
    with torch.no_grad():
        v = tiny_backbone.predict_velocity(x, sigmas[1].expand(b), cond)
    assert v.shape == x.shape == (b, 64, 48) and torch.isfinite(v).all()
    decoded = tiny_backbone.decode(tiny_backbone.encode_images(images), cond)
    assert decoded.shape == (b, 3, 32, 32)
    assert all(np.array_equal(np.asarray(to_pil(p)), np.asarray(i)) for p, i in zip(decoded, images))


def test_guidance_is_classifier_free_and_batched(tiny_backbone, bench_images):
    images, instructions = bench_images
    cond = tiny_backbone.encode_condition(images, instructions, guidance=3.0)
    x = tiny_backbone.prepare_noise(cond, torch.Generator().manual_seed(1))
    t = torch.full((len(images),), 0.7)
    with torch.no_grad():
        guided = tiny_backbone.predict_velocity(x, t, cond, guidance=3.0)
        v_c = tiny_backbone.velocity(x, t, cond)
        v_u = tiny_backbone.velocity(x, t, cond.negative)
        unguided = tiny_backbone.predict_velocity(x, t, cond, guidance=1.0)
    torch.testing.assert_close(guided, v_u + 3.0 * (v_c - v_u), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(unguided, v_c)
    assert not torch.allclose(v_c, v_u)  # the instruction reaches the denoiser


def test_items_do_not_depend_on_their_batch(tiny_backbone, bench_images):
    images, instructions = bench_images
    seeds = [5, 6, 7, 8]
    cond = tiny_backbone.encode_condition(images, instructions)
    noise = tiny_backbone.prepare_noise(cond, [torch.Generator().manual_seed(s) for s in seeds])
    alone = tiny_backbone.encode_condition(images[2:3], instructions[2:3])
    noise_alone = tiny_backbone.prepare_noise(alone, [torch.Generator().manual_seed(seeds[2])])
    assert torch.equal(noise[2:3], noise_alone)
    # Conditions of separate calls concatenate (fixed text length) and select back.
    joined = concat_conditions([alone, alone])
    assert joined.batch_size == 2 and joined.select([1]).extras["img_shapes"] == alone.extras["img_shapes"]
    with torch.no_grad():
        t = torch.full((4,), 0.5)
        batched = tiny_backbone.predict_velocity(noise, t, cond)[2:3]
        single = tiny_backbone.predict_velocity(noise_alone, t[:1], alone)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)


def test_source_image_conditions_the_velocity(tiny_backbone, bench_images):
    images, instructions = bench_images
    a = tiny_backbone.encode_condition(images[:1], instructions[:1])
    b = tiny_backbone.encode_condition(images[1:2], instructions[:1])
    x = torch.zeros(1, 64, 48)
    with torch.no_grad():
        assert not torch.allclose(tiny_backbone.velocity(x, torch.ones(1), a), tiny_backbone.velocity(x, torch.ones(1), b))


def test_prepare_images_squashes_to_32_with_box_resampling(tiny_backbone):
    wide = Image.new("RGB", (64, 48), "red")
    wide.paste((0, 0, 255), (0, 0, 32, 48))  # left half blue
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    same = random_images(1)[0]
    out = tiny_backbone.prepare_images([wide, rgba, same])
    assert [o.size for o in out] == [(32, 32)] * 3 and all(o.mode == "RGB" for o in out)
    assert out[0].getpixel((0, 0)) == (0, 0, 255) and out[0].getpixel((31, 31)) == (255, 0, 0)  # nothing cropped
    assert out[1].getpixel((0, 0)) == (255, 255, 255)  # alpha composited on white
    assert np.array_equal(np.asarray(out[2]), np.asarray(same))  # 32x32 passes untouched


def test_mismatched_inputs_are_input_errors(tiny_backbone):
    with pytest.raises(InputError, match="one instruction per image"):
        tiny_backbone.encode_condition(random_images(2), ["only one"])
    cond = tiny_backbone.encode_condition(random_images(2), ["a", "b"])
    with pytest.raises(InputError, match="one per item"):
        tiny_backbone.prepare_noise(cond, [torch.Generator()])


# -- persistence ---------------------------------------------------------------------------------


def test_save_load_round_trip_through_from_pretrained(tiny_backbone, bench_images, tmp_path):
    images, instructions = bench_images
    folder = tiny_backbone.save_pretrained(tmp_path / "editor")
    assert (folder / "transformer" / "config.json").is_file()
    assert (folder / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    assert (folder / "text_encoder" / "diffusion_pytorch_model.safetensors").is_file()
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_refine_backbone"] == "shapes" and index["transformer"] == ["diffusers", "QwenImageTransformer2DModel"]

    loaded = ShapesBackbone.from_pretrained(folder)
    assert loaded.default_guidance == tiny_backbone.default_guidance and loaded.default_steps == tiny_backbone.default_steps
    cond_a = tiny_backbone.encode_condition(images, instructions)
    cond_b = loaded.encode_condition(images, instructions)
    assert torch.equal(cond_a.text_mask, cond_b.text_mask)
    x = tiny_backbone.prepare_noise(cond_a, torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.predict_velocity(x, torch.full((4,), 0.3), cond_b),
            tiny_backbone.predict_velocity(x, torch.full((4,), 0.3), cond_a),
            atol=0,
            rtol=0,
        )


def test_half_precision_save_is_smaller_and_loads_as_float32(tiny_backbone, tmp_path):
    full = tiny_backbone.save_pretrained(tmp_path / "fp32")
    half = tiny_backbone.save_pretrained(tmp_path / "fp16", dtype=torch.float16)

    def size(folder):
        return sum(p.stat().st_size for p in folder.rglob("*.safetensors"))

    assert size(half) < 0.6 * size(full)
    loaded = ShapesBackbone.from_pretrained(half)
    assert loaded.dtype == torch.float32 and tiny_backbone.dtype == torch.float32  # saving did not cast the model
    for (name, a), b in zip(tiny_backbone.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b, atol=2e-3, rtol=1e-3, msg=name)


def test_from_pretrained_refuses_incomplete_folders(tiny_backbone, tmp_path):
    with pytest.raises(ArtifactError, match="model_index.json"):
        ShapesBackbone.from_pretrained(tmp_path)
    folder = tiny_backbone.save_pretrained(tmp_path / "editor")
    (folder / "tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(ArtifactError, match="missing tokenizer"):
        ShapesBackbone.from_pretrained(folder)


def test_builder_validates_sizes():
    with pytest.raises(InputError, match="divisible"):
        build_shapes_backbone(layers=1, width=30, heads=4, vocabulary=["a"])
    with pytest.raises(InputError, match="too small"):
        build_shapes_backbone(layers=1, width=8, heads=2, vocabulary=["a"])
    a = build_shapes_backbone(layers=1, width=32, heads=2, vocabulary=["a"], seed=3)
    b = build_shapes_backbone(layers=1, width=32, heads=2, vocabulary=["a"], seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# -- output parameterisation -----------------------------------------------------------------------


def test_x0_prediction_turns_the_transformer_output_into_a_velocity(bench_images, tmp_path):
    images, instructions = bench_images
    backbone = build_shapes_backbone(layers=1, width=32, heads=2, prediction="x0", seed=0)
    twin = build_shapes_backbone(layers=1, width=32, heads=2, prediction="velocity", seed=0)  # same weights
    cond = backbone.encode_condition(images, instructions, guidance=1.0)
    x_t = backbone.prepare_noise(cond, torch.Generator().manual_seed(0))
    t = torch.tensor([0.8, 0.3, 0.05, 0.01])
    with torch.no_grad():
        raw = twin.velocity(x_t, t, cond)  # the transformer's output as is
        v = backbone.velocity(x_t, t, cond)
    # v = (x_t - x0_hat) / max(t, 0.05): so x_t - max(t, 0.05) v gives the transformer's x0 back.
    torch.testing.assert_close(v, (x_t - raw) / t.clamp_min(0.05).view(-1, 1, 1))
    torch.testing.assert_close(x_t - t.clamp_min(backbone.x0_min_t).view(-1, 1, 1) * v, raw, atol=1e-5, rtol=0)

    # The setting travels with the weights; folders written before it existed load as velocity.
    folder = backbone.save_pretrained(tmp_path / "x0")
    assert ShapesBackbone.from_pretrained(folder).prediction == "x0"
    index = json.loads((folder / "model_index.json").read_text())
    del index["prediction"], index["x0_min_t"]
    (folder / "model_index.json").write_text(json.dumps(index))
    assert ShapesBackbone.from_pretrained(folder).prediction == "velocity"
    index["prediction"] = "epsilon"
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ArtifactError, match="prediction='epsilon'"):
        ShapesBackbone.from_pretrained(folder)


# -- attention sharpness at init -------------------------------------------------------------------


def test_qk_norm_init_scales_only_the_query_key_gains_and_sharpens_attention(bench_images):
    images, instructions = bench_images
    plain = build_shapes_backbone(layers=1, width=32, heads=1, seed=0)
    sharp = build_shapes_backbone(layers=1, width=32, heads=1, seed=0, qk_norm_init=3.0)
    gains = {"norm_q", "norm_k", "norm_added_q", "norm_added_k"}
    changed = {name for (name, a), b in zip(plain.state_dict().items(), sharp.state_dict().values()) if not torch.equal(a, b)}
    assert changed and {name.split(".")[-2] for name in changed} == gains  # nothing else moved
    assert all(float(sharp.state_dict()[name].min()) == 3.0 for name in changed)

    # Same weights otherwise, so the attention of the first block differs only by its logit scale:
    # measure its entropy (mean over queries) by recording the probabilities it computes.
    import diffusers.models.transformers.transformer_qwenimage as qwen

    def entropy(backbone):
        seen = []
        original = qwen.dispatch_attention_fn

        def spy(q, k, v, attn_mask=None, **kwargs):
            scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / q.shape[-1] ** 0.5
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask.bool(), float("-inf"))
            p = scores.softmax(-1)
            seen.append(-(p * p.clamp_min(1e-12).log()).sum(-1).mean())
            return original(q, k, v, attn_mask=attn_mask, **kwargs)

        qwen.dispatch_attention_fn = spy
        try:
            cond = backbone.encode_condition(images, instructions, guidance=1.0)
            with torch.no_grad():
                backbone.velocity(backbone.prepare_noise(cond, torch.Generator().manual_seed(0)), torch.tensor([0.5]), cond)
        finally:
            qwen.dispatch_attention_fn = original
        return float(seen[0])

    assert entropy(sharp) < entropy(plain) - 0.1


def test_an_instruction_the_editor_cannot_read_warns_once_naming_what_was_dropped(monkeypatch):
    import warnings

    from refine.backbones import shapes

    monkeypatch.setattr(shapes, "_WARNED", set())
    backbone = shapes.build_shapes_backbone(layers=1, width=32, heads=2, text_layers=1, vocabulary=["make", "it", "red"], max_text_length=6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backbone.tokenize(["make it red"])  # readable: nothing to say
        assert caught == []
        backbone.tokenize(["make it crimson", "make it teal"])
        backbone.tokenize(["make it scarlet"])
        backbone.tokenize(["make it red it red it red"])  # 7 words, 5 fit after [CLS]
        backbone.tokenize(["make it red make it red make it red"])
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2, messages  # once per kind, not once per instruction
    assert "'crimson'" in messages[0] and "[UNK]" in messages[0] and "scarlet" not in messages[0]
    assert "dropped 'it red'" in messages[1] and "'make it red it red it red'" in messages[1]
