import collections
import hashlib
import json
from itertools import islice

import pytest

from refine.errors import InputError
from refine.shapes.data import (
    ShapeCase,
    ShapeDataset,
    ShapeSequence,
    export_split,
    find_case,
    load_split,
    split_hash,
    training_stream,
)
from refine.shapes.edits import CATEGORIES, apply_edit
from refine.shapes.instructions import STYLES

# Pinned: the frozen splits must be identical on every machine and run. If a deliberate change to
# generation alters them, update these and say so (benchmark numbers are not comparable across it).
BENCH_HASH = "00a0e905ab4ba569525717056d20be3513a8d8408fd55145ddff8edcc4971f79"
MT_HASH = "babe7488fb7f8ed44db2c692dd5fddba341422d72d435d745ec7901724daef5d"
BENCH_PIXELS_HASH = "0a41edf27218e2dcbdd0bdb2fc96dc8b330a6fc7947c9d07caab854bfbcbc02f"


def test_splits_are_frozen():
    assert split_hash("shapes-bench") == BENCH_HASH
    assert split_hash("shapes-mt") == MT_HASH
    digest = hashlib.sha256()
    for case in load_split("shapes-bench")[::10]:
        digest.update(case.source_image.tobytes())
        digest.update(case.target_image.tobytes())
    assert digest.hexdigest() == BENCH_PIXELS_HASH


def test_bench_is_stratified_by_category_and_phrasing(bench):
    assert len(bench) >= 500
    counts = collections.Counter((c.category, c.phrasing) for c in bench)
    assert set(counts) == {(c, p) for c in CATEGORIES for p in STYLES}
    assert set(counts.values()) == {30}
    assert len({c.id for c in bench}) == len(bench)


def test_cases_are_exact(bench):
    for case in bench:
        assert apply_edit(case.source, case.edit) == case.target != case.source
        assert case.edit.category == case.category


def test_mt_sequences_chain_their_turns(mt):
    assert len(mt) >= 100 and all(len(seq) == 3 for seq in mt)
    for seq in mt:
        for before, after in zip(seq.cases, seq.cases[1:]):
            assert after.source == before.target
        assert seq.scenes == (seq.source, *(c.target for c in seq.cases))
    categories = collections.Counter(c.category for seq in mt for c in seq.cases)
    assert set(categories) == set(CATEGORIES)
    assert {c.phrasing for seq in mt for c in seq.cases} == set(STYLES)


def test_sequence_refuses_broken_chains(mt):
    a, b = mt[0].cases[0], mt[1].cases[1]
    with pytest.raises(InputError, match="does not start from the target"):
        ShapeSequence("broken", (a, b))


def test_training_stream_is_seeded_infinite_and_filterable():
    first = [c.to_dict() for c in islice(training_stream(3), 20)]
    again = [c.to_dict() for c in islice(training_stream(3), 20)]
    other = [c.to_dict() for c in islice(training_stream(4), 20)]
    assert first == again and first != other
    cases = list(islice(training_stream(0, indirect_fraction=0.3, categories=["move", "swap"]), 200))
    assert {c.category for c in cases} == {"move", "swap"}
    assert 0.2 < sum(c.phrasing == "indirect" for c in cases) / len(cases) < 0.4
    with pytest.raises(InputError, match="unknown or no categories"):
        next(training_stream(0, categories=["teleport"]))


def test_case_round_trips_and_refuses_tampering(bench):
    case = bench[123]
    data = json.loads(json.dumps(case.to_dict()))
    assert ShapeCase.from_dict(data) == case
    data["target"] = case.source.to_dict()
    with pytest.raises(InputError, match="stored target is not what its edit produces"):
        ShapeCase.from_dict(data)


def test_to_request_carries_the_case(bench):
    case = bench[200]
    request = case.to_request(seed=5)
    assert request.instruction == case.instruction and request.seed == 5
    assert request.image.tobytes() == case.source_image.tobytes()
    assert request.meta["case_id"] == case.id and request.meta["category"] == case.category and request.meta["phrasing"] == case.phrasing
    assert ShapeCase.from_dict(request.meta["shapes_case"]) == case
    json.dumps(request.meta)  # JSON-ready


def test_size_64_split_has_the_same_cases():
    big = load_split("shapes-bench", 64)
    assert big[7].size == 64 and big[7].target_image.size == (64, 64)
    assert big[7].instruction == load_split("shapes-bench")[7].instruction


def test_torch_dataset_batches(bench):
    import torch

    data = ShapeDataset("shapes-bench")
    item = data[3]
    assert tuple(item["source"].shape) == (3, 32, 32) and item["source"].dtype == torch.float32
    assert item["case_id"] == bench[3].id and item["instruction"] == bench[3].instruction
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=4)))
    assert tuple(batch["target"].shape) == (4, 3, 32, 32) and len(batch["instruction"]) == 4
    assert len(ShapeDataset("shapes-mt")) == 360


def test_export_split_writes_pngs_and_jsonl(tmp_path, mt):
    from PIL import Image

    path = export_split("shapes-mt", tmp_path)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert path.name == "sequences.jsonl" and len(records) == len(mt)
    first = records[0]
    assert ShapeSequence.from_dict(first["sequence"]) == mt[0]
    assert Image.open(tmp_path / first["turns"][2]["target_image"]).tobytes() == mt[0].target_images[2].tobytes()
    assert Image.open(tmp_path / first["source_image"]).tobytes() == mt[0].source_image.tobytes()


def test_export_bench_records(tmp_path, bench):
    path = export_split("shapes-bench", tmp_path)
    lines = path.read_text().splitlines()
    assert path.name == "cases.jsonl" and len(lines) == len(bench)
    record = json.loads(lines[-1])
    assert record["id"] == bench[-1].id and record["direct_instruction"] == bench[-1].direct_instruction
    assert (tmp_path / record["source_image"]).is_file() and (tmp_path / record["target_image"]).is_file()


def test_find_case():
    assert find_case("bench-swap-indirect-03").category == "swap"
    with pytest.raises(InputError, match="no benchmark case 'bench-nope'"):
        find_case("bench-nope")
    with pytest.raises(InputError, match="unknown split"):
        load_split("shapes-huge")
