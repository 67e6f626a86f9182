"""Rewards: one signature for every scorer of an edit, and the MLLM judges, consistency and ShapeEdit rewards.

Example:
    >>> from PIL import Image
    >>> from refine.rewards import CompositeReward, RewardOutput
    >>> def always_half(sources, outputs, instructions, metas):
    ...     return RewardOutput([0.5] * len(outputs))
    >>> image = Image.new("RGB", (8, 8))
    >>> CompositeReward([always_half])([image], [image], ["add a cat"], [{}]).scores
    [0.5]

Every reward is called as ``reward(sources, outputs, instructions, metas) -> RewardOutput``
(`refine.rewards.base`). Built-in kinds (``refine.registry`` category "reward"): ``mllm``
(`MLLMJudge`: Edit-R1's score-logit / sampling / yes-no / CoT modes), ``mllm_multiturn``
(`MultiTurnJudge`), ``consistency`` (`ConsistencyReward`: DINO + pixels), ``shapes_if``,
``shapes_cc``, ``shapes_pq``, ``shapes_overall``, ``shapes_gated_if`` (ShapeEdit's judge) and ``composite``. MLLM
judges run on a backend (category "vlm_backend"): ``transformers`` (`TransformersVLM`, local) or
``openai`` (`OpenAICompatibleVLM`, vLLM or any OpenAI-compatible server).
"""

from refine.rewards.backends.base import PartialBatchError, ProbResult, VLMBackend, build_backend
from refine.rewards.backends.openai_compatible import OpenAICompatibleVLM
from refine.rewards.backends.transformers_vlm import TransformersVLM
from refine.rewards.base import CompositeReward, Reward, RewardOutput, ScoreCache, image_digest
from refine.rewards.consistency import ConsistencyReward
from refine.rewards.mllm import MODES, MLLMJudge, MultiTurnJudge, PartialRewardError
from refine.rewards.prompts import JudgePrompts, MultiTurnPrompts
from refine.rewards.shapes_judge import ShapesCC, ShapesIF, ShapesOverall, ShapesPQ

__all__ = [
    "MODES",
    "CompositeReward",
    "ConsistencyReward",
    "JudgePrompts",
    "MLLMJudge",
    "MultiTurnJudge",
    "MultiTurnPrompts",
    "OpenAICompatibleVLM",
    "PartialBatchError",
    "PartialRewardError",
    "ProbResult",
    "Reward",
    "RewardOutput",
    "ScoreCache",
    "ShapesCC",
    "ShapesIF",
    "ShapesOverall",
    "ShapesPQ",
    "TransformersVLM",
    "VLMBackend",
    "build_backend",
    "image_digest",
]
