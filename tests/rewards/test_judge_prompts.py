"""The default judge prompts are the Edit-R1 paper's (appendix C); overrides are validated."""

from __future__ import annotations

import pytest

from refine.errors import ConfigError
from refine.config import validate_config
from refine.rewards.prompts import DEFAULT_REQUIREMENTS, JudgePrompts, MultiTurnPrompts

PAPER_SCORE_LINES = [
    "Here are two images: the original and the edited version. Please evaluate the edited image based on the following editing instructions and requirements.",
    "You need to rate the editing result from 0 to 5 based on the accuracy and quality of the edit.",
    "0: The wrong object was edited, or the edit completely fails to meet the requirements.",
    "5: The correct object was edited, the requirements were met, and the visual result is high quality.",
    "Response Format:",
    '"Score": [[rating]](0-5).',
]
PAPER_YESNO_LINES = [
    "Here are two images: the original and the edited version. Please evaluate if the edited image successfully meets the following editing instructions and requirements.",
    'You need to provide a "Yes" or "No" judgment based on the accuracy and quality of the edit.',
    'Answer "Yes" if: The correct object was edited according to the instruction, all requirements were met, and the visual result is high quality.',
    'Answer "No" if: The wrong object was edited, the edit fails to meet the requirements, or the visual quality is poor.',
    '"Judgement": [[Yes/No]]',
]


def test_templates_reproduce_the_paper():
    prompts = JudgePrompts()
    score = prompts.user_text("score", "turn the cup red", task="recolor").splitlines()
    assert all(line in score for line in PAPER_SCORE_LINES)
    assert "Instruction: turn the cup red" in score
    assert f"Requirements: {DEFAULT_REQUIREMENTS['recolor']}" in score
    yesno = prompts.user_text("yesno", "remove the dog", task="remove").splitlines()
    assert all(line in yesno for line in PAPER_YESNO_LINES)
    cot = prompts.user_text("score_cot", "add a hat").splitlines()
    assert any("Before that, analyze the image and provide some reasoning process" in line for line in cot)
    assert cot[-2:] == ['"Reasoning": "...",', '"Score": [[rating]](0-5).']
    assert prompts.system == "You are a helpful assistant."


def test_unknown_task_uses_the_general_requirement():
    prompts = JudgePrompts()
    assert prompts.requirement("teleport") == DEFAULT_REQUIREMENTS["general"]
    assert prompts.requirement(None) == DEFAULT_REQUIREMENTS["general"]


def test_overrides_from_config_are_checked():
    custom = validate_config(JudgePrompts, {"score": "Rate {instruction} {weird braces} 0-5", "requirements": {"general": "be nice"}})
    assert custom.user_text("score", "x") == "Rate x {weird braces} 0-5"
    with pytest.raises(ConfigError, match="instruction"):
        validate_config(JudgePrompts, {"score": "no placeholder"})
    with pytest.raises(ConfigError, match="general"):
        validate_config(JudgePrompts, {"requirements": {"add": "only add"}})
    with pytest.raises(ConfigError, match="unknown key 'scroe'"):
        validate_config(JudgePrompts, {"scroe": "typo"})


def test_multi_turn_prompt_lists_turns_and_score_tags():
    text = MultiTurnPrompts().user_text(["add a cat", "make it red", "move it left"], thinking=True)
    assert "after each of 3 editing turns" in text
    assert "Turn 2 instruction: make it red" in text
    assert "5 Fully Compliant: Instruction accurately and completely executed" in text
    assert text.rstrip().endswith(
        "<Thought> [Turn 1 analysis] [Turn 2 analysis] [Turn 3 analysis] </Thought> "
        "<Turn1Score>X</Turn1Score> <Turn2Score>X</Turn2Score> <Turn3Score>X</Turn3Score>"
    )
