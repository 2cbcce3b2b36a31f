"""The last-resort handler of every command line: an exception nobody anticipated is one line on stderr and exit 70,
the traceback only with the debug variable set, and never a token."""

from __future__ import annotations

import pytest

from app import cli as app_cli
from app import main as app_main
from app.errors import EX_SOFTWARE, ModelSourceError, guard_main
from finetune import cli as finetune_cli
from publish import cli as publish_cli
from publish.secrets import redact

TOKEN = "hf_GUARDtestZZZZZZZZZZZZZZZZZZZZZZZZZZ"


def failing(exc: BaseException):
    def main(argv=None) -> int:
        raise exc

    return main


def test_unexpected_error_is_one_line_and_exit_70(capsys, monkeypatch):
    monkeypatch.delenv("FINETUNE_DEBUG", raising=False)
    main = guard_main("FINETUNE_DEBUG")(failing(ValueError("the cache index\nis corrupt.")))
    assert main([]) == EX_SOFTWARE == 70
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "error: unexpected ValueError: the cache index is corrupt. Fix: run again with FINETUNE_DEBUG=1 for the "
        "details (the traceback), and report it if the cause is not on your side."]


def test_debug_variable_adds_the_traceback(capsys, monkeypatch):
    monkeypatch.setenv("APP_DEBUG", "1")
    assert guard_main("APP_DEBUG")(failing(KeyError("weights")))() == 70
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and "KeyError: 'weights'" in err
    assert err.splitlines()[-1].startswith("error: unexpected KeyError: 'weights'. Fix: run again with APP_DEBUG=1")


def test_long_messages_are_cut(capsys):
    assert guard_main("APP_DEBUG")(failing(RuntimeError("x" * 5000)))() == 70
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and len(line) < 500 and "xxx..." in line


def test_our_own_errors_keep_their_message_and_exit_code(capsys):
    error = ModelSourceError("The adapter is gone.", "pass another one.")
    assert guard_main("APP_DEBUG")(failing(error))() == 2
    assert capsys.readouterr().err == "error: The adapter is gone. Fix: pass another one.\n"


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(3)])
def test_interrupts_and_exits_pass_through(exc):
    with pytest.raises(type(exc)):
        guard_main("APP_DEBUG")(failing(exc))()


def test_tokens_never_show(capsys, monkeypatch):
    monkeypatch.setenv("PUBLISH_DEBUG", "1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local-secret-key")
    exc = RuntimeError(f"401 for Authorization: Bearer {TOKEN}; key sk-local-secret-key")
    assert guard_main("PUBLISH_DEBUG", scrub=redact)(failing(exc))() == 70
    err = capsys.readouterr().err
    assert TOKEN not in err and "sk-local-secret-key" not in err
    assert "Bearer ***" in err.splitlines()[-1]


@pytest.mark.parametrize("main", [finetune_cli.main, publish_cli.main, app_main.main, app_cli.main])
def test_every_command_line_has_the_handler(main):
    assert main.__wrapped__.__name__ == "main"  # set by guard_main's functools.wraps
