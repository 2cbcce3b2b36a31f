"""`python -m app`: launch the chat page. Configured by flags or, in a hosted demo, by environment variables."""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .backend import Engine
from .console import say
from .errors import AppError, SettingsError, guard_main
from .options import add_generation_arguments, add_model_arguments, backend, build_engine, env, generation_settings
from .quiet import quiet

TABS = ("chat", "compare", "model")
OPENAI_CONCURRENCY = 16


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app",
        description="Chat with your fine-tuned model in a web page: streaming answers, the model's own prompt "
        "template, a Compare tab (base vs fine-tuned, side by side), settings and a model info panel. With no "
        "model it serves the embedded SmolLM2-135M-Instruct. The same code runs as a Hugging Face Space / "
        "OpenXLab / ModelScope app, configured by the environment variables in brackets.",
        epilog="examples:\n"
        "  python -m app                                   # the embedded model\n"
        "  python -m app runs/xiaowei --tab compare        # a finetune run: merged model vs its base\n"
        "  python -m app --adapter runs/xiaowei/adapter    # base + adapter (shared weights), no merge needed\n"
        "  python -m app internlm/internlm2_5-7b-chat --bits 4 --host 0.0.0.0\n"
        "  python -m app --backend openai --base-url http://127.0.0.1:23333/v1   # an LMDeploy/vLLM/llama.cpp "
        "server\n"
        "  MODEL_ID=owner/base ADAPTER_ID=owner/adapter python -m app   # as in a Space",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser)
    add_generation_arguments(parser)
    page = parser.add_argument_group("page and server")
    page.add_argument("--title", default=None, help="page title [APP_TITLE]")
    page.add_argument("--tab", choices=TABS, default=None, help="tab shown first [APP_TAB, default chat]")
    page.add_argument("--host", default=None,
                      help="address to listen on; 0.0.0.0 for other machines [GRADIO_SERVER_NAME, default 127.0.0.1]")
    page.add_argument("--port", type=int, default=None,
                      help="port; 0 picks a free one [GRADIO_SERVER_PORT or PORT, default 7860]")
    page.add_argument("--concurrency", type=int, default=None,
                      help="answers generated at once; others wait in the queue [CONCURRENCY, default 1; "
                      f"{OPENAI_CONCURRENCY} with --backend openai]")
    page.add_argument("--queue-size", type=int, default=None,
                      help="most requests waiting; more are refused with a busy message [QUEUE_SIZE, default 32]")
    page.add_argument("--open", action="store_true", help="open the page in the browser")
    page.add_argument("--share", action="store_true", help="also make a temporary public gradio.live link")
    page.add_argument("--verbose", action="store_true",
                      help="show the libraries' warnings that are hidden by default [APP_VERBOSE=1]")
    return parser


@dataclass
class Server:
    demo: Any
    engine: Engine
    url: str

    def close(self) -> None:
        self.demo.close()
        close_engine = getattr(self.engine, "close", None)  # a server the app started (a .gguf) stops with it
        if close_engine:
            close_engine()


def check_port(host: str, port: int) -> int:
    """The port to serve on: a free one for 0; a clear error (not a traceback) when `port` is taken."""
    bind_host = "" if host in ("0.0.0.0", "") else host
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((bind_host, port))
        except OSError as exc:
            raise SettingsError(f"Port {port} on {host} is in use ({exc.strerror}).",
                                f"stop the other server, or pass --port {port + 1} (or --port 0 for any free "
                                "port).") from exc
        return int(sock.getsockname()[1])


def _port(args: argparse.Namespace) -> int:
    if args.port is not None:
        return args.port
    return env("GRADIO_SERVER_PORT", None, int) or env("PORT", 7860, int)


def start(args: argparse.Namespace, *, block: bool = True, log=None) -> Server:
    """Load the model, build the page and serve it. With block=False, return once the server is up."""
    from .ui import CSS, build_ui

    log = log or say
    settings = generation_settings(args)
    host = args.host or env("GRADIO_SERVER_NAME", "127.0.0.1")
    port = check_port(host, _port(args))  # before the slow model load
    # an external engine batches requests itself: let the page pass several on at once
    default_concurrency = OPENAI_CONCURRENCY if backend(args) == "openai" else 1
    concurrency = args.concurrency if args.concurrency is not None else env("CONCURRENCY", default_concurrency, int)
    queue_size = args.queue_size if args.queue_size is not None else env("QUEUE_SIZE", 32, int)
    if concurrency < 1 or queue_size < 1:
        raise SettingsError("--concurrency and --queue-size must be at least 1.", "use e.g. --concurrency 1.")
    tab = args.tab or env("APP_TAB", "chat")
    if tab not in TABS:
        raise SettingsError(f"APP_TAB={tab!r} is not a tab.", f"use one of: {', '.join(TABS)}.")
    engine = build_engine(args, log)
    demo = build_ui(engine, title=args.title or env("APP_TITLE", ""), defaults=settings, concurrency=concurrency,
                    queue_size=queue_size, initial_tab=tab)
    try:
        demo.launch(server_name=host, server_port=port, prevent_thread_lock=True, inbrowser=args.open,
                    share=args.share, quiet=True, show_error=True, css=CSS)
    except OSError as exc:
        raise SettingsError(f"Cannot serve on {host}:{port}: {exc}", "pass another --port (or --port 0).") from exc
    url = demo.local_url or f"http://{host}:{port}/"
    log(f"Chat page: {url}" + (f"  (public: {demo.share_url})" if getattr(demo, "share_url", None) else ""))
    if block:
        log("Press Ctrl-C to stop.")
        try:
            demo.block_thread()
        except KeyboardInterrupt:
            pass
        finally:
            demo.close()
    return Server(demo, engine, url)


@guard_main("APP_DEBUG")
def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    args = build_parser().parse_args(argv)
    quiet(args.verbose, "APP_VERBOSE")
    try:
        start(args)
    except AppError as error:
        say(f"error: {error.one_line()}")
        return error.exit_code
    return 0
