"""`refine edit` end to end on a tiny ShapeEdit editor saved to a folder (`--backbone shapes:PATH`)."""

from dataclasses import replace

import pytest
from PIL import Image

from refine.backbones.shapes import ShapesBackbone
from refine.cli import main
from refine.rollout.flow_editor import FlowEditor
from refine.types import EditRequest


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    from refine.backbones.shapes import build_shapes_backbone

    folder = tmp_path_factory.mktemp("shapes-editor")
    return build_shapes_backbone(layers=1, width=32, heads=2, text_layers=1, seed=0).save_pretrained(folder)


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "in.png"
    Image.new("RGBA", (45, 20), (255, 0, 0, 128)).save(path)  # any size and mode
    return path


def edit(args, capsys):
    try:
        main(["edit", *args])
    except SystemExit as err:
        out = capsys.readouterr()
        return err.code, out.out, out.err
    out = capsys.readouterr()
    return 0, out.out, out.err


def test_edit_writes_one_image(shapes_dir, source, tmp_path, capsys):
    out = tmp_path / "out" / "edit.png"
    code, stdout, _ = edit(["--backbone", f"shapes:{shapes_dir}", "--image", str(source), "--instruction", "add a blue circle",
                            "--out", str(out), "--steps", "2", "--seed", "3"], capsys)
    assert code == 0 and f"wrote {out}" in stdout
    assert Image.open(out).size == (32, 32)  # the shapes editor's resolution
    # the picture is the editor's edit of this image, instruction and seed (not the source, not another seed)
    backbone = ShapesBackbone.from_pretrained(shapes_dir)
    request = EditRequest(source, "add a blue circle", seed=3)
    # --seed is the request's own generator seed (the diffusers pipelines' convention), not a derived one
    editor = FlowEditor(backbone, sampler="euler", steps=2)
    expected = [editor.edit([replace(request, seed=seed)])[0].image.tobytes() for seed in (3, 4)]
    assert Image.open(out).convert("RGB").tobytes() == expected[0] != expected[1]


def test_group_writes_a_grid_and_is_seeded(shapes_dir, source, tmp_path, capsys):
    paths = [tmp_path / f"grid{i}.png" for i in range(3)]
    seeds = ["1", "1", "2"]
    for path, seed in zip(paths, seeds):
        code, stdout, _ = edit(["--backbone", f"shapes:{shapes_dir}", "--image", str(source), "--instruction", "make it blue",
                                "--out", str(path), "--steps", "2", "--group", "4", "--sampler", "sde", "--seed", seed], capsys)
        assert code == 0 and "4 samples" in stdout
    grids = [Image.open(p) for p in paths]
    assert grids[0].size == (64, 64)  # 2 x 2 tiles of 32 x 32
    assert grids[0].tobytes() == grids[1].tobytes() != grids[2].tobytes()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--backbone": "sdxl:/x"}, "unknown backbone 'sdxl' in 'sdxl:/x'; valid: flux_kontext:PATH, qwen_image_edit:PATH, shapes[:PATH]"),
        ({"--instruction": "   "}, "empty instruction"),
        ({"--image": "missing.png"}, "missing.png: no such file"),
        ({"--out": "out.gif2"}, "unknown image extension"),
        ({"--sampler": "heun"}, "name: "),  # our frame; the rest is pydantic's wording
    ],
)
def test_bad_input_is_one_line_and_exit_2(shapes_dir, source, tmp_path, capsys, change, message):
    args = {"--backbone": f"shapes:{shapes_dir}", "--image": str(source), "--instruction": "add a circle", "--out": str(tmp_path / "o.png")}
    args.update(change)
    code, _, stderr = edit([x for pair in args.items() for x in pair] + ["--steps", "1"], capsys)
    assert code == 2
    assert message in stderr and len(stderr.strip().splitlines()) == 1
