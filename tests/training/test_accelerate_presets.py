"""The accelerate presets in examples/accelerate parse as `accelerate launch` parses them and ask for what they say.

DeepSpeed is not run here (on CPU it needs oneCCL): its presets are checked as configs only. The
FSDP2 preset is also run, with the environment it produces, by tests/edit_r1/test_fsdp.py.
"""

from pathlib import Path

import pytest
from accelerate import FullyShardedDataParallelPlugin
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils.launch import prepare_multi_gpu_env

from refine.errors import ConfigError
from refine.training.accelerate_setup import make_accelerator, require_supported

PRESETS = Path(__file__).parents[2] / "examples" / "accelerate"


def _launch_args(name):
    args = launch_command_parser().parse_args(["--config_file", str(PRESETS / name), "-m", "refine.edit_r1.train"])
    return _validate_launch_command(args)[0]


def test_fsdp2_preset_launches_fsdp2_with_one_shard_group_per_transformer_block(monkeypatch):
    args = _launch_args("edit_r1_fsdp2.yaml")
    assert args.use_fsdp and not args.use_deepspeed and args.num_processes == 8
    env = prepare_multi_gpu_env(args)  # the variables `accelerate launch` hands each process
    for key, value in env.items():
        if key.startswith(("FSDP_", "ACCELERATE_USE_FSDP")):
            monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()  # what each process's Accelerator builds from them
    assert plugin.fsdp_version == 2
    assert plugin.auto_wrap_policy.__name__ == "transformer_auto_wrap_policy"  # the model's _no_split_modules blocks
    assert plugin.reshard_after_forward is True


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_presets_ask_for_their_zero_stage_in_bf16(stage):
    args = _launch_args(f"deepspeed_zero{stage}.yaml")
    assert args.use_deepspeed and not args.use_fsdp
    assert int(args.zero_stage) == stage and args.mixed_precision == "bf16" and args.num_processes == 8
    assert str(args.zero3_init_flag).lower() == ("true" if stage == 3 else "false")


def test_rl_trainers_refuse_fsdp1_with_the_preset_to_use(monkeypatch):
    accelerator = make_accelerator("no")
    monkeypatch.setattr(accelerator.state, "distributed_type", type(accelerator.distributed_type).FSDP)
    monkeypatch.setattr(accelerator.state, "fsdp_plugin", FullyShardedDataParallelPlugin(fsdp_version=1), raising=False)
    with pytest.raises(ConfigError, match="fsdp_version: 2"):
        require_supported(accelerator, "Edit-R1")
    monkeypatch.setattr(accelerator.state, "distributed_type", type(accelerator.distributed_type).DEEPSPEED)
    with pytest.raises(ConfigError, match="edit_r1_fsdp2.yaml"):
        require_supported(accelerator, "Edit-R1")
