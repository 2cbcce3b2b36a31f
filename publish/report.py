"""What `python -m publish` prints on stdout: a dry run's plan (the staged files and generated cards) and an
upload's result."""

from __future__ import annotations

import sys

from .hubs import HUBS, git_url
from .remote import human_size


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
    what = {"adapter": "adapter_config.json base_model_name_or_path", "merged": "config.json",
            "gguf": "the card's base_model"}[staged.kind]
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


def print_result(result, *, stream=None, url: bool = True) -> None:
    stream = stream or sys.stdout
    sent = f"{len(result.sent)} file(s) sent" if result.sent else "nothing sent (already up to date)"
    print(f"Done: {sent}, {result.commits} commit(s); the remote matches the staging folder "
          f"({len(result.remote)} files checked).", file=stream)
    if url:
        print(f"URL: {result.url}", file=stream)


def print_demo_plan(published, *, dry_run: bool, stream=None) -> None:
    stream = stream or sys.stdout
    bundle = published.bundle

    def out(line: str = "") -> None:
        print(line, file=stream)

    if dry_run:
        out("Dry run: the demo bundle is built locally; nothing was uploaded and no network request was made.")
    out(f"  platform:  {HUBS[bundle.hub].label}  repo: {bundle.repo}")
    out(f"  hardware:  {bundle.hardware.name} ({bundle.hardware.note}); {bundle.fit}")
    out(f"  variables: {', '.join(f'{k}={v}' for k, v in bundle.variables.items())}")
    out(f"  bundle:    {bundle.path} ({len(bundle.files)} files, {human_size(bundle.total_size)})")
    if dry_run:
        for item in bundle.files:
            if "/" not in item.path:
                out(f"    {item.size:>9,} B  {item.path}")
        out(f"    + app/ ({sum(1 for f in bundle.files if f.path.startswith('app/'))} files)")
        out("---- README.md (generated) ----")
        out((bundle.path / "README.md").read_text(encoding="utf-8").rstrip("\n"))
        out("---- end of README.md ----")
    if published.result is not None:
        print_result(published.result, stream=stream, url=False)
    if published.manual_steps:
        out("Manual action required on OpenXLab (it has no API for apps); the demo is NOT published until you:")
        for number, step in enumerate(published.manual_steps, 1):
            out(f"  {number}. {step}")
    elif not dry_run:
        out(f"URL: {published.url} (the platform builds the page in a few minutes)")
