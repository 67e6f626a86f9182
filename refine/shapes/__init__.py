"""ShapeEdit: a CPU-scale image-editing world with exact targets, a verifiable judge and fixed benchmarks.

Example:
    >>> from refine.shapes import judge_edit, load_split
    >>> case = load_split("shapes-bench")[0]
    >>> judge_edit(case.source_image, case.target_image, case).overall
    1.0

Modules: `world` (scenes, rendering), `edits` (the 9 edit categories), `instructions` (direct and
indirect phrasings, vocabulary), `data` (cases, sequences, training stream, benchmark splits),
`judge` (parser and IF/CC/PQ scores), `degrade` (simulated editor artefacts), `candidates` (outputs of known
quality, and `CandidateEditor`, an editor that returns them), `cli` (`refine shapes`).
"""

from refine.shapes.data import (
    REPORTING_SPLITS,
    SPLITS,
    VALIDATION_SPLITS,
    ShapeCase,
    ShapeDataset,
    ShapeSequence,
    case_key,
    export_split,
    find_case,
    iter_cases,
    load_split,
    make_case,
    make_sequence,
    reserved_case_keys,
    split_hash,
    stream_case,
    training_stream,
)
from refine.shapes.degrade import degrade, noise_image
from refine.shapes.edits import (
    CATEGORIES,
    Add,
    Background,
    Edit,
    Hybrid,
    Move,
    Recolor,
    Remove,
    Replace,
    Resize,
    Swap,
    apply_edit,
    edit_from_dict,
    random_edit,
)
from refine.shapes.instructions import MAX_TOKENS, VOCABULARY, direct_phrasing, phrase, tokenize
from refine.shapes.judge import JudgeScore, ParsedScene, SequenceScore, judge_edit, judge_meta, judge_sequence, parse_image, parse_scene, success_rates
from refine.shapes.world import COLORS, POSITION_NAMES, SHAPES, SIZES, Obj, Scene, random_scene, render

__all__ = [
    "CATEGORIES",
    "COLORS",
    "MAX_TOKENS",
    "POSITION_NAMES",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "VOCABULARY",
    "Add",
    "Background",
    "Edit",
    "Hybrid",
    "JudgeScore",
    "Move",
    "Obj",
    "ParsedScene",
    "Recolor",
    "Remove",
    "Replace",
    "Resize",
    "Scene",
    "SequenceScore",
    "ShapeCase",
    "ShapeDataset",
    "ShapeSequence",
    "Swap",
    "apply_edit",
    "degrade",
    "direct_phrasing",
    "edit_from_dict",
    "case_key",
    "export_split",
    "find_case",
    "iter_cases",
    "judge_edit",
    "judge_meta",
    "judge_sequence",
    "load_split",
    "make_case",
    "make_sequence",
    "noise_image",
    "parse_image",
    "parse_scene",
    "phrase",
    "random_edit",
    "random_scene",
    "render",
    "reserved_case_keys",
    "split_hash",
    "stream_case",
    "success_rates",
    "tokenize",
    "training_stream",
]
