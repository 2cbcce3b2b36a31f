"""`python -m publish adapter`: stage a run's adapter (or merged model) for a hub, then upload and verify it."""

from __future__ import annotations

import os
from dataclasses import dataclass

from app.console import say

from .remote import UploadResult, human_size
from .report import print_plan, print_result
from .secrets import redacted_output
from .stage import StagedFolder, stage_adapter
from .upload import upload_model


@dataclass
class Published:
    staged: StagedFolder
    result: UploadResult | None  # None for a dry run


def commit_message(staged: StagedFolder) -> str:
    what = "LoRA adapter" if staged.kind == "adapter" else "merged model"
    return f"Upload {what} fine-tuned from {staged.base_id} (python -m publish)"


def publish_adapter(source: str | os.PathLike, *, hub: str, repo: str, merged: bool = False,
                    base_id: str | None = None, license: str | None = None, out: str | os.PathLike | None = None,
                    private: bool = False, dry_run: bool = False) -> Published:
    """Stage; unless `dry_run`, upload only what the hub does not have yet, then check the remote file list."""
    say(f"Staging the {'merged model' if merged else 'adapter'} from {source} ...")
    staged = stage_adapter(source, hub=hub, repo=repo, merged=merged, out=out, base_id=base_id, license=license)
    if dry_run:
        return Published(staged, None)
    say(f"Uploading {len(staged.files)} files ({human_size(staged.total_size)}) to {staged.url} ...")
    work_dir = staged.path.parent / f".git-{staged.path.name}"  # OpenXLab's working clone, outside the staging dir
    with redacted_output():
        result = upload_model(staged.hub, staged.path, staged.files, staged.repo, private=private,
                              message=commit_message(staged), work_dir=work_dir)
    return Published(staged, result)


def handle(args) -> int:
    """`python -m publish adapter ...`: the thin command-line wrapper (publish/cli.py holds its options)."""
    published = publish_adapter(args.source, hub=args.hub, repo=args.repo, merged=args.merged,
                                base_id=args.base_id, license=args.license, out=args.out, private=args.private,
                                dry_run=args.dry_run)
    if published.result is None:
        print_plan(published.staged, private=args.private)
    else:
        print_result(published.result)
    return 0
