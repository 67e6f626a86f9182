"""CandidateEditor: outputs of known quality as an Editor, drawn by the request's seed."""

import itertools

import pytest

from refine.errors import InputError
from refine.shapes.candidates import CandidateEditor
from refine.shapes.data import training_stream
from refine.shapes.judge import judge_edit
from refine.types import EditRequest


def test_candidates_spread_the_judges_score_and_repeat_by_seed():
    cases = list(itertools.islice(training_stream(7), 40))
    requests = [case.to_request(seed=i) for i, case in enumerate(cases)]
    results = CandidateEditor().edit(requests)
    scores = [judge_edit(case.source_image, result.image, case).overall for case, result in zip(cases, results)]
    kinds = {result.meta["candidate"] for result in results}
    # perfect edits, failures and near misses: the expert has something to critique at every level
    assert min(scores) < 0.2 and max(scores) == 1.0 and sum(0.2 < s < 0.95 for s in scores) >= 5
    assert {"target", "source"} <= kinds and kinds & {"same_category", "collateral", "half_edit"}
    for result, case in zip(results, cases):
        if result.meta["candidate"] == "target":
            assert result.image.tobytes() == case.target_image.tobytes()
    again = CandidateEditor().edit(requests)
    assert [a.image.tobytes() for a in again] == [r.image.tobytes() for r in results]
    assert [r.instruction for r in results] == [c.instruction for c in cases]


def test_candidate_editor_needs_the_case():
    case = next(training_stream(7))
    with pytest.raises(InputError, match="shapes_case"):
        CandidateEditor().edit([EditRequest(case.source_image, case.instruction)])
