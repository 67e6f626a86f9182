"""The tuning splits (shapes-val, shapes-mt-val) and the rule that no stream yields a split's case."""

import collections
import json
from itertools import islice

from typer.testing import CliRunner

from refine.cli import app
from refine.shapes.data import (
    REPORTING_SPLITS,
    VALIDATION_SPLITS,
    _fresh_case,
    case_key,
    export_split,
    find_case,
    load_split,
    make_case,
    reserved_case_keys,
    seeded_rng,
    split_hash,
    split_keys,
    stream_case,
    training_stream,
)
from refine.shapes.edits import CATEGORIES
from refine.shapes.instructions import STYLES

# Pinned like BENCH_HASH / MT_HASH in test_data.py: tuning results are comparable only on one split.
VAL_HASH = "a25d0838d7d44558e067d92fcdeef2c5392bacd5a7a7d89537e64f1cc44291cb"
MT_VAL_HASH = "9173f7785a516a539512d4dfc45d69f51fbfbc23240115432c37aff6a5acf056"

# Index 2631 of the first draws of training_stream(0) is the exact source and edit of
# bench-resize-direct-16 and index 4034 that of bench-recolor-direct-14 (found by
# benchmarks/shapes_overlap.py); without the exclusion the stream would yield both.
KNOWN_HITS = {2631: "bench-resize-direct-16", 4034: "bench-recolor-direct-14"}


def test_val_splits_are_frozen():
    assert split_hash("shapes-val") == VAL_HASH
    assert split_hash("shapes-mt-val") == MT_VAL_HASH


def test_val_has_the_strata_of_bench():
    val, bench = load_split("shapes-val"), load_split("shapes-bench")
    count = collections.Counter((c.category, c.phrasing) for c in val)
    assert count == collections.Counter((c.category, c.phrasing) for c in bench)
    assert set(count) == {(c, p) for c in CATEGORIES for p in STYLES} and set(count.values()) == {30}
    assert all(c.id.startswith("val-") for c in val) and len({c.id for c in val}) == len(val)


def test_mt_val_is_built_as_mt():
    mt_val = load_split("shapes-mt-val")
    assert len(mt_val) == len(load_split("shapes-mt")) and all(len(seq) == 3 for seq in mt_val)
    assert all(turn.id.startswith("mtval-") for seq in mt_val for turn in seq.cases)
    assert {c.category for seq in mt_val for c in seq.cases} == set(CATEGORIES)
    assert {c.phrasing for seq in mt_val for c in seq.cases} == set(STYLES)


def test_val_and_reported_splits_share_no_case():
    reported, tuning = split_keys(REPORTING_SPLITS), split_keys(VALIDATION_SPLITS)
    assert len(reported) == 540 + 360 and len(tuning) == 540 + 360
    assert not reported & tuning
    assert reserved_case_keys() == reported | tuning


def test_case_key_is_source_and_target_not_pixels_or_words():
    bench = load_split("shapes-bench")
    big = load_split("shapes-bench", 64)
    assert case_key(big[5]) == case_key(bench[5]) != case_key(bench[6])


def test_a_reserved_draw_is_redrawn():
    first = make_case(seeded_rng("shapes-val", "move", "direct", 0), "move", "direct", "x")
    again = _fresh_case(seeded_rng("shapes-val", "move", "direct", 0), "move", "direct", "x", 32, frozenset({case_key(first)}))
    assert case_key(again) != case_key(first) and again.category == "move" and again.phrasing == "direct"
    assert _fresh_case(seeded_rng("shapes-val", "move", "direct", 0), "move", "direct", "x", 32, frozenset()) == first


def test_stream_skips_known_benchmark_cases():
    reserved = reserved_case_keys()
    for index, case_id in KNOWN_HITS.items():
        raw = stream_case(0, index, skip_reserved=False)
        assert case_key(raw) == case_key(find_case(case_id))
        kept = stream_case(0, index)
        assert kept.id == raw.id and case_key(kept) not in reserved
        # Every other index draws exactly what it drew before the exclusion.
        assert stream_case(0, index + 1) == stream_case(0, index + 1, skip_reserved=False)


def test_training_stream_never_yields_a_split_case():
    # ~10,000 draws (a few seconds) of the stream that would yield KNOWN_HITS without the exclusion.
    reserved = reserved_case_keys()
    drawn = list(islice(training_stream(0), max(KNOWN_HITS) + 6000))
    assert drawn[2631] == stream_case(0, 2631)
    assert [c.id for c in drawn[:3]] == ["train-0-0", "train-0-1", "train-0-2"]
    assert not [c.id for c in drawn if case_key(c) in reserved]


def test_cli_shows_and_exports_the_val_splits(tmp_path):
    for split in VALIDATION_SPLITS:
        out = tmp_path / f"{split}.png"
        result = CliRunner().invoke(app, ["shapes", "show", "--split", split, "--n", "3", "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert out.is_file()
    path = export_split("shapes-mt-val", tmp_path / "mt")
    first = json.loads(path.read_text().splitlines()[0])
    assert path.name == "sequences.jsonl" and first["id"] == "mtval-000" and len(first["turns"]) == 3
    assert find_case("mtval-000-t2") == load_split("shapes-mt-val")[0].cases[1]
