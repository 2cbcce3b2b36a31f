"""`python -m publish adapter RUN --to hf|modelscope|openxlab --repo OWNER/NAME --dry-run`.

Stages the folder to publish (adapter or merged model, rewritten configs, model card, hub files) and prints what an
upload would send. Uploads are not implemented yet: without --dry-run the command says so and exits 2. Tokens are
never read from the command line (they will come from the environment or the hubs' login caches).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from finetune.errors import FinetuneError

from . import __version__
from .errors import NotImplementedYet
from .hubs import HUB_NAMES, HUBS, git_url


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples keep their line breaks; each option's help states its own default."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m publish",
        description="Publish a fine-tuned model to Hugging Face, ModelScope or OpenXLab. For now only --dry-run: "
        "it stages the folder that would be uploaded (RUN/publish/<hub>/) and prints it; no network request.",
        epilog="examples:\n"
        "  python -m publish adapter runs/xiaowei --to hf --repo you/xiaowei-adapter --dry-run\n"
        "  python -m publish adapter runs/xiaowei --to modelscope --repo you/xiaowei-adapter --dry-run\n"
        "  python -m publish adapter runs/xiaowei --merged --to openxlab --repo you/xiaowei --dry-run\n"
        "  python -m publish adapter my_adapter --base-id Qwen/Qwen2.5-0.5B-Instruct --to hf --repo you/x --dry-run",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"publish {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    adapter = subparsers.add_parser(
        "adapter",
        help="stage (and later upload) an adapter or a merged model",
        description="Stage a run's adapter (or, with --merged, its merged model) for a hub: safetensors weights, "
        "adapter_config.json with base_model_name_or_path rewritten from the local folder to the base model's id on "
        "that hub, tokenizer files, finetune_meta.json without local paths, loss.png, a bilingual model card "
        "(README.md) and the hub's own file (ModelScope configuration.json, OpenXLab metafile.yml). The staging "
        "folder is written to a temporary path and renamed, so a failure leaves none.",
        epilog="examples:\n"
        "  python -m publish adapter runs/xiaowei --to hf --repo you/xiaowei-adapter --dry-run\n"
        "  python -m publish adapter runs/xiaowei/merged --merged --to modelscope --repo you/xiaowei --dry-run",
        formatter_class=HelpFormatter,
    )
    adapter.add_argument("source", help="run directory, adapter folder (RUN/adapter) or, with --merged, RUN/merged")
    adapter.add_argument("--to", dest="hub", required=True, choices=HUB_NAMES, help="target hub")
    adapter.add_argument("--repo", required=True, help="target repo id, OWNER/NAME")
    adapter.add_argument("--merged", action="store_true", help="publish the merged model instead of the adapter")
    adapter.add_argument("--base-id", dest="base_id", default=None,
                         help="the base model's id on the target hub (default: from the preset whose folder the "
                         "adapter was trained on)")
    adapter.add_argument("--license", default=None, help="license for the card (default: the base model's)")
    adapter.add_argument("--out", default=None, help="staging folder (default: RUN/publish/<hub>[-merged])")
    adapter.add_argument("--private", action="store_true", help="create the repo private (used by uploads)")
    adapter.add_argument("--dry-run", dest="dry_run", action="store_true",
                         help="stage and print what would be uploaded; no network request (the only mode for now)")
    adapter.set_defaults(func=_adapter)
    return parser


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def print_plan(staged, *, private: bool, stream=None) -> None:
    stream = stream or sys.stdout
    hub = HUBS[staged.hub]

    def out(line: str = "") -> None:
        print(line, file=stream)

    out("Dry run: staged locally; nothing was uploaded and no network request was made.")
    out(f"  hub:    {hub.label} ({hub.name})")
    out(f"  repo:   {staged.repo} ({'private' if private else 'public'})")
    out(f"  url:    {staged.url} (an upload would create it if missing)")
    remote = git_url(staged.hub, staged.repo)
    if remote:
        out(f"  git:    {remote} (create the repo on openxlab.org.cn first; uploads push here)")
    what = ("adapter_config.json base_model_name_or_path" if staged.kind == "adapter" else "config.json")
    out(f"  model:  {staged.kind} of {staged.base_id} ({what} points to it)")
    out(f"  staged: {staged.path}")
    out("files:")
    width = max(len(f"{f.size:,}") for f in staged.files)
    for item in staged.files:
        out(f"  {item.size:>{width},} B  {human_size(item.size):>9}  {item.path}  sha256:{item.sha256[:12]}")
    out(f"total: {staged.total_size:,} B ({human_size(staged.total_size)}) in {len(staged.files)} files")
    for name, title in (("README.md", "model card"), ("configuration.json", "ModelScope"),
                        ("metafile.yml", "OpenXLab")):
        path = staged.path / name
        if path.is_file():
            out(f"---- {name} ({title}, generated) ----")
            out(path.read_text(encoding="utf-8").rstrip("\n"))
            out(f"---- end of {name} ----")


def _adapter(args) -> int:
    if not args.dry_run:
        raise NotImplementedYet("Uploads are not implemented yet; nothing was staged or uploaded.",
                                "add --dry-run to stage the folder and see exactly what would be uploaded.")
    from .stage import stage_adapter

    print(f"Staging the {'merged model' if args.merged else 'adapter'} from {args.source} for {HUBS[args.hub].label} "
          "...", file=sys.stderr)
    staged = stage_adapter(args.source, hub=args.hub, repo=args.repo, merged=args.merged, out=args.out,
                           base_id=args.base_id, license=args.license)
    print_plan(staged, private=args.private)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FinetuneError as error:  # PublishError is one
        if os.environ.get("PUBLISH_DEBUG"):
            traceback.print_exc()
        print(f"error: {error.one_line()}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("error: interrupted. Fix: run the same command again; a half-staged folder is never kept.",
              file=sys.stderr)
        return 130
