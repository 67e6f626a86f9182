"""The parser table: each malformed output is parsed (with the documented repairs) or rejected."""

import pytest

from refine.thinker.format import ThinkerOutput, format_thinker_output, parse_thinker_output

# (raw output, ok, semantic, quality, stop, answer, repairs that must be reported)
# Hand-written cases, one per rule of refine/thinker/format.py's docstring.
TABLE = [
    ("<think>r</think><score>[7, 8]</score><answer>add a cat</answer>", True, 7, 8, None, "add a cat", []),
    ("<think>r</think><score>[7.5, 8]</score><answer>add a cat</answer>", True, 7.5, 8, None, "add a cat", []),
    ("<THINK>r</THINK>< score >[7, 8]</ score ><Answer>add a cat</Answer>", True, 7, 8, None, "add a cat", []),
    ('<think>r</think><score>{"semantic": 3, "quality": 9}</score><answer>x</answer>', True, 3, 9, None, "x", ["scores given as a JSON dict"]),
    ('<think>r</think><score>{"S_qual": 9, "S_sem": 3}</score><answer>x</answer>', True, 3, 9, None, "x", ["scores given as a JSON dict"]),
    ("<think>r</think><score>semantic: 3, quality: 9</score><answer>x</answer>", True, 3, 9, None, "x", ["scores given as named values"]),
    ("<think>r</think><score>7, 8</score><answer>x</answer>", True, 7, 8, None, "x", ["scores not written as a list"]),
    ("<think>r</think><score>(7, 8)</score><answer>x</answer>", True, 7, 8, None, "x", ["scores not written as a list"]),
    ("<think>r</think><score>7/10 and 9/10</score><answer>x</answer>", True, 7, 9, None, "x", ["scores not written as a list"]),
    ("<think>r</think><score>[6]</score><answer>x</answer>", True, 6, None, None, "x", ["one score: quality missing"]),
    ("<think>r</think><score>[6, 7, 8]</score><answer>x</answer>", True, 6, 7, None, "x", ["3 scores; kept the first two"]),
    ("<think>r</think><score>[14, -2]</score><answer>x</answer>", True, 10, 0, None, "x", ["score 14 clamped to 0-10", "score -2 clamped to 0-10"]),
    ("<think>r</think><score>good</score><answer>x</answer>", True, None, None, None, "x", ["unreadable <score>; dropped"]),
    ("<think>r</think><answer>x</answer>", True, None, None, None, "x", []),
    ("<score>[7, 8]</score><answer>x</answer>", True, 7, 8, None, "x", ["no <think> block"]),
    ("Sure! <think>r</think><score>[7, 8]</score><answer>x</answer> Hope this helps.", True, 7, 8, None, "x", ["ignored text outside the tags"]),
    ("<answer>x</answer><think>r</think><score>[7, 8]</score>", True, 7, 8, None, "x", ["blocks out of order: answer, think, score"]),
    ("<think>r<score>[7, 8]</score><answer>x</answer>", True, 7, 8, None, "x", ["unclosed <think>"]),
    ("<think>r</think><score>[7, 8]</score><answer>add a cat", True, 7, 8, None, "add a cat", ["unclosed <answer>"]),
    ("reasoning first</think><score>[7, 8]</score><answer>x</answer>", True, 7, 8, None, "x", ["missing <think>"]),
    ("<think>r</think><score>[7, 8]</score><answer>first</answer><answer>second</answer>", True, 7, 8, None, "second", ["2 <answer> blocks; kept the last non-empty one"]),
    ("<think>r</think><score>[7, 8]</score><answer>x</answer><answer> </answer>", True, 7, 8, None, "x", ["2 <answer> blocks; kept the last non-empty one"]),
    ('<think>r</think><score>[7, 8]</score><answer>"add a cat"</answer>', True, 7, 8, None, "add a cat", ["removed quotes around the answer"]),
    ("<think>r</think><score>[7, 8]</score><answer>Refined instruction: add a cat</answer>", True, 7, 8, None, "add a cat", ["removed the label 'Refined instruction:'"]),
    ("<think>r</think><score>[7, 8]</score><answer>add\n  a   cat</answer>", True, 7, 8, None, "add a cat", []),
    # The expert style: a stop flag instead of scores.
    ("<think>r</think><stop>yes</stop><answer>x</answer>", True, None, None, True, "x", []),
    ("<think>r</think><stop>No.</stop><answer>x</answer>", True, None, None, False, "x", []),
    ("<think>done</think><stop>", True, None, None, True, None, []),
    ("<think>r</think><stop>maybe</stop><answer>x</answer>", True, None, None, None, "x", ["unreadable <stop> value 'maybe'; ignored"]),
    # Rejections: typed result, never an exception.
    ("", False, None, None, None, None, []),
    ("I think the edit looks fine.", False, None, None, None, None, []),
    ("<think>r</think><score>[7, 8]</score>", False, 7, 8, None, None, []),
    ("<think>r</think><score>[7, 8]</score><answer>  </answer>", False, 7, 8, None, None, []),
    ("<think>r</think><stop>no</stop>", False, None, None, False, None, []),
    ("<think>r</think><score>[7, 8]</score><answer>" + "go " * 1000 + "</answer>", False, 7, 8, None, None, []),
]

# Verbatim generations (40 new tokens) of the tiny random Qwen2.5-VL / Qwen3-VL fixtures of
# refine.testing.tiny_vlm, greedy and sampled at temperature 1, prompted with the thinker and the
# expert prompts through VLMThinker: random subword soup with control bytes and stray "<" / "[[".
# All must be rejected (no exception).
TINY_MODEL_OUTPUTS = [
    '\x07"\x7fginamenY Reasoning\x7fginamenY Reasoning\x7fginamenY Reasoning Herecc\ufffdc_sthap\ufffd\ufffdage',
    "<\ufffd\ufffdapg yellowhan acc'ur\ufffdangle\ufffd?<|\ufffd\ufffd\ufffdap rat9angleer_stangleerX Judgement \x7f]]\ufffd\ufffddan\ufffd\ufffd veO\ufffdeed",
    "Score m\x12 fcriart\ufffd\ufffdcsi\ufffd\ufffdlor\ufffd\x0eru]] chanRe\ufffd\x17\ufffdrs&em\x17cc\x1c% veurac|>\n\ufffd move7sy\ufffd T",
    " NoSco\ufffd\ufffdare\ufffd\ufffd\ufffd\ufffd to\ufffd Turnc_sterScc\ufffdc_sterScc\ufffdc_sterScc\ufffdc_sterS",
    "Score m\x12 fcriart\ufffd\ufffd_start\ufffd\x13{ the the|>\ufffdrre]\x19\x17han;\ufffdri\ufffdem\ufffd assi\ufffd\u0783 moveHere!\ufffden",
    " quality\ufffd obj\ufffd\ufffds lar\ufffdound assi\ufffd triC\ufffdl\ufffd c\x0b1Rd bot bot bot bot bot bot bot bot",
    '_end\ufffdstructions/an\x0b\ufffd image "\ufffd\ufffd1" Re\ufffd\x06\ufffd [[lt\x0b\ufffd ddimvisu\ufffd',
    "_st\ufffder fveC\ufffdve the\x0b< edit\ufffdove\ufffd\ufffd\ufffds\ufffd\x18\ufffd\x19\x17RestructionB\ufffd f [[\ufffd\ufffdac c\ufffdkground\x06t\x08\ufffd",
    # near misses a random model can produce token by token: not tags, so not EditThinker output
    "<thin> make it blue </thin>",
    "<answers>make it blue</answers>",
    "<answer make it blue",
    "<|im_start|>assistant\n<|im_end|>",
]


@pytest.mark.parametrize("raw", TINY_MODEL_OUTPUTS)
def test_tiny_model_garbage_is_rejected_not_raised(raw):
    result = parse_thinker_output(raw)
    assert not result.ok and result.error.startswith("no EditThinker tags")


@pytest.mark.parametrize("raw, ok, semantic, quality, stop, answer, repairs", TABLE)
def test_table(raw, ok, semantic, quality, stop, answer, repairs):
    result = parse_thinker_output(raw)
    assert result.ok is ok, result.error
    assert (result.error is None) is ok
    out = result.output
    assert out.semantic == (None if semantic is None else float(semantic))
    assert out.quality == (None if quality is None else float(quality))
    assert out.stop is stop
    if ok:
        assert out.answer == answer
    for repair in repairs:
        assert repair in result.repairs, result.repairs


def test_clean_output_reports_no_repair():
    assert parse_thinker_output("<think>r</think><score>[7, 8]</score><answer>add a cat</answer>").repairs == []


def test_rejection_messages_say_why():
    assert "no EditThinker tags" in parse_thinker_output("hello").error
    assert "no <answer>" in parse_thinker_output("<think>r</think><score>[1, 2]</score>").error
    assert "empty <answer>" in parse_thinker_output("<answer> </answer>").error
    assert "runaway" in parse_thinker_output("<answer>" + "x" * 5000 + "</answer>").error


def test_rejected_output_keeps_what_was_readable():
    result = parse_thinker_output("<think>the cat is red</think><score>[2, 9]</score>")
    assert not result.ok and result.output.reasoning == "the cat is red" and result.output.semantic == 2.0


@pytest.mark.parametrize("value", [None, 42, b"<answer>x</answer>"])
def test_non_string_input_never_raises(value):
    assert isinstance(parse_thinker_output(value).ok, bool)


@pytest.mark.parametrize(
    "output",
    [
        ThinkerOutput("the cat is still red", 3, 8, None, "make the cat blue"),
        ThinkerOutput("fine", 9.5, 7.25, None, "keep it"),
        ThinkerOutput("done", None, None, True, "make the cat blue"),
        ThinkerOutput("not yet", None, None, False, "move the square left"),
    ],
)
def test_serializer_round_trips(output):
    text = format_thinker_output(output)
    parsed = parse_thinker_output(text)
    assert parsed.ok and parsed.repairs == [] and parsed.output == output


def test_serializer_styles():
    out = ThinkerOutput("r", 7, 8, True, "x")
    assert format_thinker_output(out, "scores") == "<think>r</think><score>[7, 8]</score><answer>x</answer>"
    assert format_thinker_output(out, "stop") == "<think>r</think><stop>yes</stop><answer>x</answer>"
