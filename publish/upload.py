"""One entry to the three uploaders: pick the hub's token and client, send a staged folder, verify, return."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import MissingToken
from .remote import UploadResult
from .secrets import Secret, from_env

GIT_TOKEN_ENV = ("GIT_TOKEN", "GITHUB_TOKEN")  # for pushing a demo bundle to a git remote (OpenXLab apps)


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def upload_model(hub: str, folder: Path, files: list, repo: str, *, private: bool, message: str,
                 work_dir: Path) -> UploadResult:
    """Upload a staged adapter/merged-model folder to `hub`; the uploader verifies the remote afterwards."""
    if hub == "hf":
        from .upload_hf import hf_token, upload_hf

        return upload_hf(folder, files, repo, token=hf_token(), private=private, repo_type="model",
                         commit_message=message)
    if hub == "modelscope":
        from .upload_modelscope import modelscope_token, upload_modelscope

        return upload_modelscope(folder, files, repo, token=modelscope_token(), private=private, repo_type="model",
                                 commit_message=message)
    from .upload_openxlab import openxlab_credentials, upload_openxlab

    username, token = openxlab_credentials()
    return upload_openxlab(folder, files, repo, username=username, token=token, commit_message=message,
                           work_dir=work_dir)


def upload_demo(hub: str, folder: Path, files: list, repo: str, *, private: bool, message: str,
                variables: dict[str, str], secrets: dict[str, Secret], hardware: str | None, work_dir: Path,
                git_remote: str | None = None) -> UploadResult:
    """Upload a demo bundle as a Space (hf) or Studio (modelscope), or push it to a git remote (openxlab)."""
    if hub == "hf":
        from .upload_hf import hf_token, upload_hf

        return upload_hf(folder, files, repo, token=hf_token(), private=private, repo_type="space",
                         commit_message=message, space_sdk="gradio", space_variables=variables,
                         space_secrets=secrets, space_hardware=hardware)
    if hub == "modelscope":
        from .upload_modelscope import modelscope_token, upload_modelscope

        return upload_modelscope(folder, files, repo, token=modelscope_token(), private=private,
                                 repo_type="studio", commit_message=message, studio_variables=variables,
                                 studio_secrets=secrets, deploy=True, hardware=hardware)
    from .upload_openxlab import GitTarget, upload_openxlab

    token_help = (f"export {GIT_TOKEN_ENV[0]}=<a token with push access to {git_remote}> (GitHub: a fine-grained "
                  "token with Contents read/write) and GIT_USER if the host needs a user name; it reaches git "
                  "through GIT_ASKPASS, never the URL.")
    target = GitTarget("the app's git remote", token_help,
                       "create the (empty) repo first, e.g. on https://github.com/new, then run this again.",
                       f"check the network or proxy and the --git-remote URL ({git_remote}).")
    token = from_env(*GIT_TOKEN_ENV)
    if token is None:
        raise MissingToken(f"No git token to push the app to {git_remote}.", token_help)
    result = upload_openxlab(folder, files, repo, username=os.environ.get("GIT_USER", "git"), token=token,
                             commit_message=message, work_dir=work_dir, remote_url=git_remote, target=target)
    result.url = git_remote or result.url
    return result
