"""Training wrapper: log parsing, checkpoints, loss curve, and honest failures (XTuner's exit code lies)."""

import sys

import pytest

from finetune.errors import InputError, StageFailed
from finetune.runner import Launch, command_for, describe_exit, run_tool
from finetune.train import Progress, checkpoints, newest_checkpoint, parse_iter_line, plot_loss, train

LINE = ("11/22 23:10:23 - mmengine - INFO - Iter(train) [ 2/39]  lr: 1.0000e-03  eta: 0:00:10  time: 3.6426  "
        "data_time: 0.0097  grad_norm: 1.6808  loss: 2.7323")


def test_parse_iter_line():
    record = parse_iter_line(LINE)
    assert record == {"iter": 2, "total": 39, "lr": 1e-3, "eta": "0:00:10", "time": 3.6426, "data_time": 0.0097,
                      "grad_norm": 1.6808, "loss": 2.7323}
    assert parse_iter_line("11/22 - mmengine - INFO - Checkpoints will be saved to /x") is None


def test_progress_collects_history_and_prints_plain_lines(capsys):
    progress = Progress(stream=sys.stdout)
    progress("some noise")
    progress(LINE)
    progress(LINE.replace("[ 2/39]", "[ 3/39]").replace("loss: 2.7323", "loss: 2.5"))
    out = capsys.readouterr().out
    assert "train 2/39  loss 2.7323  lr 1.00e-03" in out and "train 3/39" in out and "some noise" not in out
    assert [h["iter"] for h in progress.history] == [2, 3]


def test_newest_checkpoint_orders_numerically(tmp_path):
    import zipfile

    for n in (5, 40, 100):
        with zipfile.ZipFile(tmp_path / f"iter_{n}.pth", "w") as archive:  # torch.save's container
            archive.writestr("data.pkl", b"x")
    (tmp_path / "iter_7.pth").mkdir()  # DeepSpeed checkpoints are directories
    (tmp_path / "last_checkpoint").write_text("x")
    assert [p.name for p in checkpoints(tmp_path)] == ["iter_5.pth", "iter_7.pth", "iter_40.pth", "iter_100.pth"]
    assert newest_checkpoint(tmp_path).name == "iter_100.pth"
    assert newest_checkpoint(tmp_path / "empty") is None


def test_loss_curve_png(tmp_path):
    history = [{"iter": i, "total": 10, "loss": 3 / i, "lr": 1e-3} for i in range(1, 11)]
    out = plot_loss(history, tmp_path / "loss.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_loss([], tmp_path / "none.png") is None


def test_torchrun_command_for_several_gpus():
    command = command_for("train", ["cfg.py"], Launch(gpus=4, nnodes=2, node_rank=1, master_addr="10.0.0.1"))
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc_per_node=4" in command and "--nnodes=2" in command and "--node_rank=1" in command
    assert command[-2:] == ["--launcher", "pytorch"] and "finetune.xtuner_train" in command
    assert command_for("train", ["cfg.py"]) == [sys.executable, "-m", "finetune.xtuner_train", "cfg.py"]


def test_describe_exit():
    assert describe_exit(1) == "exited with code 1"
    assert "SIGKILL" in describe_exit(-9) and "out of memory" in describe_exit(-9)


def test_missing_config_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        train(tmp_path / "nope.py", tmp_path / "wd")


def test_config_xtuner_rejects_fails_with_log_tail(tmp_path):
    config = tmp_path / "bad.py"
    config.write_text("model = dict(type='NoSuchModel')\ntrain_cfg = dict(max_epochs=1)\n")
    with pytest.raises(StageFailed) as failure:
        train(config, tmp_path / "wd")
    assert "XTuner train exited with code" in failure.value.message
    assert failure.value.log_tail.strip()
    assert (tmp_path / "wd" / "train.log").is_file()
    assert newest_checkpoint(tmp_path / "wd") is None


def test_killed_tool_reports_the_signal(tmp_path, monkeypatch):
    import finetune.runner as runner

    monkeypatch.setitem(runner.TOOLS, "train", "finetune_test_suicide")
    (tmp_path / "finetune_test_suicide.py").write_text("import os, signal\nprint('working', flush=True)\n"
                                                       "os.kill(os.getpid(), signal.SIGKILL)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with pytest.raises(StageFailed) as failure:
        run_tool("train", [], log_path=tmp_path / "log.txt")
    assert "SIGKILL" in failure.value.message and "working" in failure.value.log_tail


def test_newest_checkpoint_skips_one_cut_off_while_being_written(tmp_path):
    import torch

    from finetune.train import newest_checkpoint

    torch.save({"state_dict": {"w": torch.ones(64)}}, tmp_path / "iter_4.pth")
    whole = (tmp_path / "iter_4.pth").read_bytes()
    (tmp_path / "iter_8.pth").write_bytes(whole[: len(whole) // 2])  # killed mid-save
    notices = []
    assert newest_checkpoint(tmp_path, notice=notices.append) == tmp_path / "iter_4.pth"
    assert notices == ["skipping iter_8.pth: it was cut off while being written (an interrupted run)"]
    (tmp_path / "iter_4.pth").write_bytes(b"")
    assert newest_checkpoint(tmp_path) is None


def test_epoch_restarts_skip_mmengines_sleep_only_where_no_worker_is_respawned(monkeypatch):
    """mmengine sleeps 2 s at each restart of the dataloader; our configs (no workers, or persistent ones) skip it,
    a config whose workers are re-spawned keeps it."""
    import types

    from mmengine.runner import loops
    from torch.utils.data import DataLoader

    from finetune.xtuner_train import skip_needless_epoch_sleeps

    slept: list[float] = []
    monkeypatch.setattr(loops, "time", types.SimpleNamespace(sleep=slept.append))
    monkeypatch.setattr(loops._InfiniteDataloaderIterator, "__next__", loops._InfiniteDataloaderIterator.__next__)
    skip_needless_epoch_sleeps()
    for loader in (DataLoader([1, 2], batch_size=2),
                   DataLoader([1, 2], batch_size=2, num_workers=1, persistent_workers=True)):
        batches = loops._InfiniteDataloaderIterator(loader)
        assert [next(batches).tolist() for _ in range(3)] == [[1, 2]] * 3  # two restarts
        assert slept == []
    batches = loops._InfiniteDataloaderIterator(DataLoader([1, 2], batch_size=2, num_workers=1))
    assert [next(batches).tolist() for _ in range(2)] == [[1, 2]] * 2
    assert slept == [2]
