"""`python -m publish gguf`: stage a run's GGUF export (the .gguf files, the Modelfile, a card) for a hub, then
upload and verify it, with the same idempotence and token rules as `publish adapter`."""

from __future__ import annotations

import os

from app.console import say

from .adapter import Published
from .card import quant_label
from .remote import human_size
from .report import print_plan, print_result
from .secrets import redacted_output
from .stage import stage_gguf
from .upload import upload_model


def publish_gguf(source: str | os.PathLike, *, hub: str, repo: str, base_id: str | None = None,
                 license: str | None = None, out: str | os.PathLike | None = None, private: bool = False,
                 dry_run: bool = False) -> Published:
    say(f"Staging the GGUF export from {source} ...")
    staged = stage_gguf(source, hub=hub, repo=repo, out=out, base_id=base_id, license=license)
    if dry_run:
        return Published(staged, None)
    quants = ", ".join(quant_label(f.path) for f in staged.files if f.path.endswith(".gguf"))
    say(f"Uploading {len(staged.files)} files ({human_size(staged.total_size)}) to {staged.url} ...")
    with redacted_output():
        result = upload_model(staged.hub, staged.path, staged.files, staged.repo, private=private,
                              message=f"Upload GGUF ({quants}) fine-tuned from {staged.base_id} (python -m publish)",
                              work_dir=staged.path.parent / f".git-{staged.path.name}")
    return Published(staged, result)


def handle(args) -> int:
    """`python -m publish gguf ...`: the thin command-line wrapper (publish/cli.py holds its options)."""
    published = publish_gguf(args.source, hub=args.hub, repo=args.repo, base_id=args.base_id, license=args.license,
                             out=args.out, private=args.private, dry_run=args.dry_run)
    if published.result is None:
        print_plan(published.staged, private=args.private)
    else:
        print_result(published.result)
    return 0
