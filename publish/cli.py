"""`python -m publish adapter|demo ...`: upload a fine-tuned model, or deploy its chat demo, to Hugging Face,
ModelScope or OpenXLab. Tokens come only from the environment or the hubs' login caches, never from the command
line, and never show in output. `--dry-run` stages everything locally and makes no network request."""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from app.console import say
from app.errors import AppError, guard_main
from app.quiet import quiet

from . import __version__, net
from . import adapter as adapter_verb
from . import demo as demo_verb
from . import gguf as gguf_verb
from .hubs import HUB_NAMES, OPENXLAB_GIT_ENV
from .secrets import redact


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples keep their line breaks; each option's help states its own default."""


TOKENS_HELP = ("tokens (never on the command line): Hugging Face HF_TOKEN or `huggingface-cli login`; ModelScope "
               "MODELSCOPE_API_TOKEN or `modelscope login`; OpenXLab OPENXLAB_GIT_USER + OPENXLAB_GIT_TOKEN (a Git "
               "access token); a git remote for an OpenXLab app: GIT_TOKEN. Endpoints: HF_ENDPOINT, "
               f"MODELSCOPE_ENDPOINT, {OPENXLAB_GIT_ENV}. Network: PUBLISH_CONNECT_TIMEOUT (default 4 s: how fast an "
               "unreachable hub fails), PUBLISH_READ_TIMEOUT (60 s), PUBLISH_RETRIES (3, for HTTP 5xx, resets and "
               "timeouts; never for 4xx), PUBLISH_RETRY_BACKOFF (0.5 s).")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m publish",
        description="Publish a fine-tuned model to Hugging Face, ModelScope or OpenXLab, or deploy its chat demo. "
        "Every upload sends only what the hub does not have yet, then checks the remote file list; rerunning after "
        "an interruption resumes. --dry-run stages the folder and prints it without any network request.",
        epilog="examples:\n"
        "  python -m publish adapter runs/xiaowei --to hf --repo you/xiaowei-adapter\n"
        "  python -m publish adapter runs/xiaowei --merged --to modelscope --repo you/xiaowei\n"
        "  python -m publish adapter runs/xiaowei --to openxlab --repo you/xiaowei-adapter --dry-run\n"
        "  python -m publish gguf runs/xiaowei --to hf --repo you/xiaowei-GGUF\n"
        "  python -m publish demo --to hf --repo you/xiaowei-chat --model HuggingFaceTB/SmolLM2-135M-Instruct "
        "--adapter you/xiaowei-adapter\n\n" + TOKENS_HELP + "\n\nLibrary warnings nobody can act on are hidden; "
        "PUBLISH_VERBOSE=1 shows them.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"publish {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    adapter = subparsers.add_parser(
        "adapter",
        help="upload an adapter or a merged model with a generated model card",
        description="Stage a run's adapter (or, with --merged, its merged model) for a hub and upload it: "
        "safetensors weights, adapter_config.json with base_model_name_or_path rewritten from the local folder to "
        "the base model's id on that hub, tokenizer files, finetune_meta.json without local paths, loss.png, a "
        "bilingual model card (README.md) and the hub's own file (ModelScope configuration.json, OpenXLab "
        "metafile.yml). The staging folder is written to a temporary path and renamed. The repo is created if "
        "missing (OpenXLab: create it on openxlab.org.cn first); unchanged files are not sent again.",
        epilog="examples:\n"
        "  python -m publish adapter runs/xiaowei --to hf --repo you/xiaowei-adapter\n"
        "  python -m publish adapter runs/xiaowei/merged --merged --to modelscope --repo you/xiaowei --dry-run\n\n"
        + TOKENS_HELP,
        formatter_class=HelpFormatter,
    )
    adapter.add_argument("source", help="run directory, adapter folder (RUN/adapter) or, with --merged, RUN/merged")
    _add_target(adapter)
    adapter.add_argument("--merged", action="store_true", help="publish the merged model instead of the adapter")
    adapter.add_argument("--base-id", dest="base_id", default=None,
                         help="the base model's id on the target hub (default: from the preset whose folder the "
                         "adapter was trained on)")
    adapter.add_argument("--license", default=None, help="license for the card (default: the base model's)")
    adapter.add_argument("--out", default=None, help="staging folder (default: RUN/publish/<hub>[-merged])")
    adapter.set_defaults(func=adapter_verb.handle)

    gguf = subparsers.add_parser(
        "gguf",
        help="upload a run's GGUF export (files + Modelfile + card) to Hugging Face or ModelScope",
        description="Stage RUN/gguf (written by `python -m finetune export`): every .gguf file, the Ollama "
        "Modelfile and a bilingual card whose metadata lists it as a GGUF fine-tune of its base, with how to "
        "`ollama run` and `llama-server` it. Only files the hub lacks are sent; the remote is checked afterwards.",
        epilog="examples:\n"
        "  python -m publish gguf runs/xiaowei --to hf --repo you/xiaowei-GGUF --dry-run\n"
        "  python -m publish gguf runs/xiaowei --to modelscope --repo you/xiaowei-GGUF",
        formatter_class=HelpFormatter,
    )
    gguf.add_argument("source", help="run directory or its gguf/ folder")
    _add_target(gguf)
    gguf.add_argument("--base-id", dest="base_id", default=None,
                      help="hub id of the base model (default: read from the run)")
    gguf.add_argument("--license", default=None, help="license for the card (default: the base model's)")
    gguf.add_argument("--out", default=None, help="staging folder (default: RUN/publish/<hub>-gguf)")
    gguf.set_defaults(func=gguf_verb.handle)

    demo = subparsers.add_parser(
        "demo",
        help="deploy the chat page for a published model (Space, Studio, OpenXLab app)",
        description="Build the chat demo bundle (app.py, app/, pinned requirements.txt, README with the platform's "
        "front matter), check that the model fits the chosen hardware, upload it as a Hugging Face Space or a "
        "ModelScope Studio with MODEL_ID/ADAPTER_ID/BITS set as variables, and print its URL. OpenXLab apps have no "
        "API: the bundle is pushed to --git-remote (a GitHub repo) and the console steps are printed.",
        epilog="examples:\n"
        "  python -m publish demo --to hf --repo you/xiaowei-chat --model HuggingFaceTB/SmolLM2-135M-Instruct "
        "--adapter you/xiaowei-adapter\n"
        "  python -m publish demo --to hf --repo you/chat7b --model you/xiaowei-7b --bits 4 --hardware t4-small\n"
        "  python -m publish demo --to openxlab --repo you/xiaowei --model you/xiaowei-merged "
        "--git-remote https://github.com/you/xiaowei-app.git\n\n" + TOKENS_HELP,
        formatter_class=HelpFormatter,
    )
    _add_target(demo)
    demo.add_argument("--model", required=True, help="hub id of the merged model, or of the base when --adapter is set")
    demo.add_argument("--adapter", default=None, help="hub id of the LoRA adapter to load on --model")
    demo.add_argument("--bits", type=int, choices=(4, 8), default=None, help="load in 4/8 bit (GPU hardware only)")
    demo.add_argument("--hardware", default=None,
                      help="hf: cpu-basic (default, free), cpu-upgrade, t4-small, t4-medium, l4x1, a10g-small, "
                      "a10g-large, l40sx1, a100-large (paid: requested for the Space); modelscope: cpu, gpu-a10; "
                      "openxlab: cpu, a10")
    demo.add_argument("--title", default=None, help="page title (default: Chat with <model>)")
    demo.add_argument("--system-prompt", dest="system_prompt", default=None,
                      help="default system prompt (default: the one the model was trained with)")
    demo.add_argument("--no-compare", dest="compare", action="store_false",
                      help="merged model: skip loading the base for the Compare tab (halves memory)")
    demo.add_argument("--no-fit-check", dest="check", action="store_false",
                      help="skip the pre-flight memory check")
    demo.add_argument("--token-secret-env", dest="token_secret_env", default=None, metavar="VAR",
                      help="environment variable holding a read token to store as the demo's HF_TOKEN / "
                      "MODELSCOPE_API_TOKEN secret (private or gated models)")
    demo.add_argument("--source", choices=("hf", "modelscope", "openxlab"), default=None,
                      help="where the app downloads --model/--adapter [MODEL_SOURCE]: default modelscope for "
                      "--to modelscope, else hf; openxlab clones both with git-lfs (so both must be OpenXLab repos; "
                      "adds packages.txt)")
    demo.add_argument("--git-remote", dest="git_remote", default=None,
                      help="openxlab: the GitHub repo to push the app to (token from GIT_TOKEN)")
    demo.add_argument("--out", default=None, help="bundle folder (default: demo-bundles/<hub>-<owner>-<name>)")
    demo.set_defaults(func=demo_verb.handle)
    return parser


def _add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", dest="hub", required=True, choices=HUB_NAMES, help="target hub")
    parser.add_argument("--repo", required=True, help="target repo id, OWNER/NAME")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--dry-run", dest="dry_run", action="store_true",
                        help="stage and print what would be uploaded; no network request")


@guard_main("PUBLISH_DEBUG", scrub=redact)
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet(env="PUBLISH_VERBOSE")
    try:
        if not args.dry_run:
            net.settings()  # a bad PUBLISH_* value is reported before anything is staged
        return int(args.func(args) or 0)
    except AppError as error:  # PublishError, and finetune's errors from the readers publish shares with it
        if os.environ.get("PUBLISH_DEBUG"):
            print(redact(traceback.format_exc()), file=sys.stderr, end="")
        say(redact(f"error: {error.one_line()}"))
        return error.exit_code
    except KeyboardInterrupt:
        say("error: interrupted. Fix: run the same command again; a half-staged folder is never kept.")
        return 130
