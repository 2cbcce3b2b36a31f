"""What a distributed launch is given and how its failures read, in seconds: real torchrun around small scripts, and
every DeepSpeed config we pass through DeepSpeed's own parser. The real training runs are in test_distributed.py."""

import argparse
import json
import socket

import pytest

import finetune.runner as runner
from finetune.errors import InputError, StageFailed
from finetune.runner import Launch, run_tool
from finetune.train import DEEPSPEED_NAMES, add_launch_arguments, deepspeed_config, launch_from_args, train

FAILING_RANK = """import os, sys, time
from torch.distributed.elastic.multiprocessing.errors import record

@record  # as finetune.xtuner_train: torchrun's summary then carries the exception
def main():
    if os.environ["RANK"] == "1":
        raise ValueError("the data shard of rank 1 is unreadable")
    time.sleep(60)  # rank 0 waits until torchrun stops it

main()
"""


def test_a_failing_rank_is_named_with_its_error_not_the_rank_torchrun_stopped(tmp_path, monkeypatch):
    monkeypatch.setitem(runner.TOOLS, "train", "finetune_test_failing_rank")
    (tmp_path / "finetune_test_failing_rank.py").write_text(FAILING_RANK)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    port = free_port()
    with pytest.raises(StageFailed) as failure:
        run_tool("train", [], log_path=tmp_path / "log.txt", launch=Launch(gpus=2, master_port=port))
    message = failure.value.message
    assert message.startswith("XTuner train failed on rank 1 (local rank 1 on "), message
    assert ("which exited with code 1 (ValueError: the data shard of rank 1 is unreadable); the other ranks were "
            "stopped; full log: ") in message
    assert "ChildFailedError" in failure.value.log_tail


def test_a_master_port_in_use_is_named_with_the_fix(tmp_path):
    config = tmp_path / "cfg.py"
    config.write_text("# torchrun fails before any rank reads it\n")
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StageFailed) as failure:
            train(config, tmp_path / "wd", launch=Launch(gpus=2, master_port=port))
    assert failure.value.message.startswith(f"torchrun could not listen on --master-port {port}: the port is in use")
    assert "--master-port" in failure.value.fix


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def parse_launch(argv: list[str]) -> Launch:
    parser = argparse.ArgumentParser()
    add_launch_arguments(parser)
    return launch_from_args(parser.parse_args(argv))


def test_launch_flags_and_their_environment_variables(monkeypatch):
    for name in ("NPROC_PER_NODE", "NNODES", "NODE_RANK", "ADDR", "MASTER_ADDR", "PORT", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert parse_launch([]) == Launch()
    monkeypatch.setenv("NPROC_PER_NODE", "8")
    monkeypatch.setenv("NNODES", "2")
    monkeypatch.setenv("NODE_RANK", "1")
    monkeypatch.setenv("ADDR", "10.0.0.1")
    assert parse_launch([]) == Launch(gpus=8, nnodes=2, node_rank=1, master_addr="10.0.0.1")
    assert parse_launch(["--gpus", "4", "--node-rank", "0"]).gpus == 4
    with pytest.raises(InputError, match="--node-rank 2 is not a launch"):
        parse_launch(["--nnodes", "2", "--node-rank", "2"])


def test_a_node_other_than_0_refuses_to_resume_without_the_checkpoint(tmp_path):
    config = tmp_path / "cfg.py"
    config.write_text("# never launched\n")
    with pytest.raises(InputError, match="Node 1 finds no checkpoint to resume from") as refusal:
        train(config, tmp_path / "wd", resume=True, launch=Launch(nnodes=2, node_rank=1))
    assert "shared filesystem" in refusal.value.fix
    assert not (tmp_path / "wd" / "train.log").exists()  # refused before anything started


def test_finetune_run_trains_on_one_node(tmp_path):
    from finetune.run import RunOptions, run

    with pytest.raises(InputError, match="trains on one node") as refusal:
        run(RunOptions(out=str(tmp_path / "run"), launch=Launch(gpus=8, nnodes=2)))
    assert "python -m finetune train` on every node" in refusal.value.fix


GPUS = {"bf16 GPU (A100, H100)": (True, True), "fp16 GPU (V100, T4)": (True, False)}


@pytest.mark.parametrize("stage", DEEPSPEED_NAMES)
@pytest.mark.parametrize("device", [*GPUS, "cpu"])
def test_every_deepspeed_config_we_pass_parses_with_deepspeeds_own_parser(stage, device, tmp_path, monkeypatch):
    """What XTuner's train tool hands DeepSpeed: the config `--deepspeed` names (XTuner's own file on a GPU, our CPU
    copy), its "auto" dtypes resolved by XTuner for the device, batch and clipping filled in by XTuner's strategy."""
    import mmengine._strategy.deepspeed
    import torch
    import xtuner.tools.utils
    from deepspeed.runtime.config import DeepSpeedConfig
    from xtuner.engine import DeepSpeedStrategy
    from xtuner.tools.utils import auto_dtype_of_deepspeed_config

    with monkeypatch.context() as patch:
        if device in GPUS:  # what `--deepspeed` is given on a GPU
            patch.setattr(torch.cuda, "is_available", lambda: True)
        argument = deepspeed_config(stage, tmp_path)
    if device in GPUS:
        available, bf16 = GPUS[device]
        monkeypatch.setattr(xtuner.tools.utils, "get_torch_device",
                            lambda: argparse.Namespace(is_available=lambda: available, is_bf16_supported=lambda: bf16))
    if device in GPUS:
        from xtuner.configs import cfgs_name_path

        assert argument == DEEPSPEED_NAMES[stage]
        path = cfgs_name_path[argument]
    else:
        path = argument
    settings = auto_dtype_of_deepspeed_config(json.loads(open(path).read()))
    # mmengine registers DeepSpeed's optimizers with every strategy it builds; a second registration is an error
    monkeypatch.setattr(mmengine._strategy.deepspeed, "register_deepspeed_optimizers", list)
    strategy = DeepSpeedStrategy(config=settings, gradient_accumulation_steps=4, train_micro_batch_size_per_gpu=2,
                                 gradient_clipping=1.0, exclude_frozen_parameters=True, sequence_parallel_size=1)
    parsed = DeepSpeedConfig(strategy.config)
    assert parsed.zero_optimization_stage == int(stage[-1])
    assert parsed.train_batch_size == 2 * 4 and parsed.gradient_clipping == 1.0
    assert (parsed.bfloat16_enabled, parsed.fp16_enabled) == {"cpu": (False, False),
                                                              "bf16 GPU (A100, H100)": (True, False),
                                                              "fp16 GPU (V100, T4)": (False, True)}[device]


def test_deepspeeds_parser_is_strict(tmp_path):
    """The check above can fail: a misspelt ZeRO key is an error, not ignored."""
    from deepspeed.runtime.config import DeepSpeedConfig

    settings = json.loads(open(deepspeed_config("zero2", tmp_path)).read())
    settings.update(train_micro_batch_size_per_gpu=1, gradient_accumulation_steps=1, gradient_clipping=1.0)
    settings["zero_optimization"]["overlap_com"] = True
    with pytest.raises(Exception, match="overlap_com"):
        DeepSpeedConfig(settings)
