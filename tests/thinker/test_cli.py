"""`refine edit --thinker expert|vlm:SPEC --max-turns N`: turns printed, trace saved, errors in one line."""

import pytest
from PIL import Image

from refine.cli import main
from refine.shapes.data import load_split
from refine.thinker.traces import read_requests, read_turns


@pytest.fixture(scope="module")
def tiny_shapes_editor(tmp_path_factory):
    from refine.backbones.shapes import build_shapes_backbone

    folder = tmp_path_factory.mktemp("shapes-editor")
    build_shapes_backbone(layers=1, width=32, heads=2, text_layers=1, default_steps=2).save_pretrained(folder)
    return folder


def run(argv, capsys):
    code = 0
    try:
        main(argv)
    except SystemExit as info:
        code = info.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_edit_with_the_expert_thinker_prints_turns_and_saves_the_trace(tiny_shapes_editor, tmp_path, capsys):
    case = next(c for c in load_split("shapes-bench") if c.phrasing == "indirect")
    case.source_image.save(tmp_path / "in.png")
    argv = ["edit", "--backbone", f"shapes:{tiny_shapes_editor}", "--image", str(tmp_path / "in.png"), "--instruction",
            case.instruction, "--out", str(tmp_path / "out.png"), "--steps", "2", "--thinker", "expert", "--max-turns", "2"]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "thinker expert, up to 2 turns"
    assert lines[1].startswith(f"[0] turn 1  ran {case.instruction!r}  semantic ") and f"next {case.direct_instruction!r}" in lines[1]
    assert lines[2].startswith(f"[0] turn 2  ran {case.direct_instruction!r}") and "stopped: " in lines[2]
    assert (tmp_path / "out.png").is_file() and f"trace: {tmp_path / 'out.trace'}" in out
    assert [r.turn for r in read_turns(tmp_path / "out.trace")] == [1, 2]
    summary = read_requests(tmp_path / "out.trace")[0]
    assert summary["meta"]["case_id"] == case.id
    # OUT is the edit the loop kept, as recorded in the trace
    kept = Image.open(tmp_path / "out.trace" / summary["final_image"]).convert("RGB").tobytes()
    assert Image.open(tmp_path / "out.png").convert("RGB").tobytes() == kept


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--thinker", "gpt"], "is not a thinker spec"),
        (["--thinker", "expert"], "needs a ShapeEdit case"),
        (["--thinker", "expert", "--group", "2"], "drop --group 2"),
    ],
)
def test_thinker_errors_are_one_line(tiny_shapes_editor, tmp_path, capsys, extra, message):
    from PIL import Image

    Image.new("RGB", (32, 32), "white").save(tmp_path / "in.png")
    argv = ["edit", "--backbone", f"shapes:{tiny_shapes_editor}", "--image", str(tmp_path / "in.png"), "--instruction",
            "add a red circle", "--out", str(tmp_path / "out.png"), "--steps", "2", *extra]
    code, out, err = run(argv, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and message in lines[0] and "Traceback" not in err
