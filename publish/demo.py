"""The hosted chat demo: a bundle of `app.py` + `app/` + pinned requirements + the platform's README, and the
variables that point it at your model. Building it touches no network; uploading is `upload.py`'s job."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from app.console import say
from finetune.fsutil import atomic_dir

from .errors import InputError
from .hardware import DEFAULT_HARDWARE, Hardware, check_fit, get_hardware
from .hubs import HUBS, check_repo_id, demo_url, get_hub
from .remote import UploadResult
from .report import print_demo_plan
from .secrets import from_env, redacted_output
from .stage import StagedFile, list_files
from .upload import upload_demo

ROOT = Path(__file__).resolve().parent.parent
APP_DIR = ROOT / "app"
LOCK = ROOT / "requirements.txt"
PYTHON_VERSION = "3.11"
# What app/ imports at run time (transformers and peft pull the rest); versions come from our lock.
RUNTIME_PACKAGES = ["torch", "transformers", "tokenizers", "peft", "accelerate", "safetensors", "sentencepiece",
                    "huggingface_hub", "numpy"]


@dataclass
class DemoBundle:
    path: Path
    hub: str
    repo: str
    variables: dict[str, str]  # set on the platform (Space/Studio variables, OpenXLab console)
    hardware: Hardware
    fit: str  # the pre-flight verdict
    files: list[StagedFile] = field(default_factory=list)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)


SOURCES = ("hf", "modelscope", "openxlab")  # where the hosted app downloads MODEL_ID / ADAPTER_ID from
PACKAGES_FOR_OPENXLAB = "git\ngit-lfs\n"  # apt packages: MODEL_SOURCE=openxlab clones the repos with git-lfs


def default_source(hub: str) -> str:
    return HUBS[hub].demo_source


def demo_variables(model_id: str, adapter_id: str | None, bits: int | None, source: str, *,
                   title: str | None = None, system_prompt: str | None = None) -> dict[str, str]:
    variables = {"MODEL_ID": model_id}
    if adapter_id:
        variables["ADAPTER_ID"] = adapter_id
    if bits:
        variables["BITS"] = str(bits)
    if source != "hf":
        variables["MODEL_SOURCE"] = source
    if title:
        variables["APP_TITLE"] = title
    if system_prompt:
        variables["SYSTEM_PROMPT"] = system_prompt
    return variables


def _key(name: str) -> str:
    return name.lower().replace("_", "-")


def lock_pins(lock: Path = LOCK) -> dict[str, str]:
    """{normalized name: 'name==version'} for every pin in the lock."""
    pins = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        name, sep, version = line.strip().partition("==")
        if sep:
            pins[_key(name)] = f"{name}=={version.split()[0]}"
    return pins


GRADIO_VERSION = lock_pins()["gradio"].partition("==")[2]  # a Space installs it from the README's sdk_version


def pinned_requirements(*, bits: int | None, hub: str, source: str = "hf", lock: Path = LOCK) -> str:
    pins = lock_pins(lock)
    wanted = list(RUNTIME_PACKAGES)
    if bits:
        wanted.append("bitsandbytes")
    if source == "modelscope":
        wanted.append("modelscope")
    if HUBS[hub].demo_lists_gradio:  # a Space installs gradio from the README's sdk_version; the others need it
        wanted.append("gradio")
    missing = [name for name in wanted if _key(name) not in pins]
    if missing:
        raise InputError(f"requirements.txt has no pin for {', '.join(missing)}.",
                         "restore requirements.txt from the repository.")
    lines = [pins[_key(name)] for name in wanted]
    return "# Pinned from the toolkit's lock (requirements.txt); the app is tested with exactly these.\n" + \
        "\n".join(lines) + "\n"


def _models(model_id: str, adapter_id: str | None) -> list[str]:
    return [adapter_id, model_id] if adapter_id else [model_id]


def space_readme(repo: str, model_id: str, adapter_id: str | None, hardware: Hardware, title: str) -> str:
    meta = {
        "title": title[:60], "emoji": "💬", "colorFrom": "indigo", "colorTo": "pink",
        "sdk": "gradio", "sdk_version": GRADIO_VERSION, "python_version": PYTHON_VERSION, "app_file": "app.py",
        "models": _models(model_id, adapter_id), "suggested_hardware": hardware.name,
        "short_description": "Chat with a fine-tuned model (XTuner LoRA)"[:60], "pinned": False,
    }
    return _front_matter(meta) + _body(repo, model_id, adapter_id, hardware)


def studio_readme(repo: str, model_id: str, adapter_id: str | None, hardware: Hardware, title: str) -> str:
    # ModelScope's studio card (创空间卡片): domain, tags, models, deployspec.entry_file.
    meta = {"domain": ["nlp"], "tags": ["chat", "xtuner", "lora", "gradio"], "models": _models(model_id, adapter_id),
            "deployspec": {"entry_file": "app.py"}, "license": "apache-2.0"}
    return _front_matter(meta) + f"# {title}\n\n" + _body(repo, model_id, adapter_id, hardware)


def app_readme(repo: str, model_id: str, adapter_id: str | None, hardware: Hardware, title: str) -> str:
    return f"# {title}\n\n" + _body(repo, model_id, adapter_id, hardware)


def _front_matter(meta: dict) -> str:
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n"


def _body(repo: str, model_id: str, adapter_id: str | None, hardware: Hardware) -> str:
    what = f"the adapter `{adapter_id}` on `{model_id}`" if adapter_id else f"`{model_id}`"
    what_zh = f"基于 `{model_id}` 的适配器 `{adapter_id}`" if adapter_id else f"`{model_id}`"
    return (
        f"Chat with {what}: streaming answers, an editable system prompt, and a Compare tab with the base model's "
        "answer beside the fine-tuned one.\n\n"
        f"与 {what_zh} 对话：流式输出、可编辑的系统提示词，以及基座模型与微调模型的对比页。\n\n"
        "Everything is configured by environment variables (`MODEL_ID`, `ADAPTER_ID`, `BITS`, `SYSTEM_PROMPT`, …): "
        "change them in the platform's settings to point the page at another model. Run it locally with "
        "`pip install -r requirements.txt gradio==" + GRADIO_VERSION + " && python app.py`.\n\n"
        f"Built by `python -m publish demo --repo {repo}`; suggested hardware: `{hardware.name}`.\n"
    )


def _copy_app(dst: Path) -> None:
    shutil.copytree(APP_DIR, dst / "app", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(APP_DIR / "space_app.py", dst / "app.py")


def check_model_ref(value: str, flag: str) -> str:
    value = value.strip()
    if value.startswith(("/", ".", "~")) or "\\" in value:
        raise InputError(f"{flag} {value} is a local path; the hosted demo can only download hub ids.",
                         f"publish the model first (python -m publish adapter ...) and pass its id: {flag} OWNER/NAME.")
    return check_repo_id(value, flag=flag)


def build_demo(out: str | Path, *, hub: str, repo: str, model_id: str, adapter_id: str | None = None,
               bits: int | None = None, hardware: str | None = None, title: str | None = None,
               system_prompt: str | None = None, compare: bool = True, check: bool = True,
               source: str | None = None) -> DemoBundle:
    """Write the demo bundle to `out` (atomically) after the pre-flight fit check."""
    hub = get_hub(hub).name
    repo = check_repo_id(repo)
    model_id = check_model_ref(model_id, "--model")
    adapter_id = check_model_ref(adapter_id, "--adapter") if adapter_id else None
    source = source or default_source(hub)
    if source not in SOURCES:
        raise InputError(f"Unknown model source '{source}'.", f"use --source one of: {', '.join(SOURCES)}.")
    if bits not in (None, 4, 8):
        raise InputError(f"--bits {bits} is not supported.", "use --bits 4 or --bits 8, or leave it out.")
    chosen = get_hardware(hub, hardware)
    # For a merged model the Compare tab loads its base as a second copy; base + adapter share one.
    copies = 1 if adapter_id or not compare else 2
    fit = check_fit(hub, chosen, model_id, bits=bits, copies=copies) if check else "fit check skipped (--no-fit-check)"
    variables = demo_variables(model_id, adapter_id, bits, source, title=title, system_prompt=system_prompt)
    if not compare:
        variables["COMPARE"] = "0"
    title = title or f"Chat with {(adapter_id or model_id).split('/')[-1]}"
    readme = {"hf": space_readme, "modelscope": studio_readme, "openxlab": app_readme}[hub]
    out = Path(out).expanduser()
    with atomic_dir(out) as tmp:
        _copy_app(tmp)
        (tmp / "requirements.txt").write_text(pinned_requirements(bits=bits, hub=hub, source=source),
                                              encoding="utf-8")
        if source == "openxlab":
            (tmp / "packages.txt").write_text(PACKAGES_FOR_OPENXLAB, encoding="utf-8")
        (tmp / "README.md").write_text(readme(repo, model_id, adapter_id, chosen, title), encoding="utf-8")
    return DemoBundle(path=out, hub=hub, repo=repo, variables=variables, hardware=chosen, fit=fit,
                      files=list_files(out))


def default_demo_out(hub: str, repo: str) -> Path:
    return Path("demo-bundles") / f"{hub}-{repo.replace('/', '-')}"


def _check_demo_out(out: Path) -> None:
    if out.is_file():
        raise InputError(f"--out {out} is a file.", "pass a folder path.")
    if out.is_dir() and any(out.iterdir()) and not ((out / "app.py").is_file() and (out / "app").is_dir()):
        raise InputError(f"--out {out} exists and is not a demo bundle; it is left untouched.",
                         "pass an empty or new folder.")


def openxlab_steps(bundle: DemoBundle, git_remote: str | None) -> list[str]:
    """OpenXLab apps have no API: what is left to do in the console, in order."""
    variables = " ".join(f"{k}={v}" for k, v in bundle.variables.items())
    steps = []
    if not git_remote:
        steps.append(f"create an empty GitHub repo and push {bundle.path} to it (or rerun with --git-remote URL)")
    steps += [
        "open https://openxlab.org.cn/apps → 创建 (Create) → Gradio",
        f"fill in the app name, pick the GitHub repo {git_remote or '(the one above)'}, branch main, entry app.py",
        f"hardware: {bundle.hardware.name} ({bundle.hardware.note}); GPU flavours need a quota application first",
        f"advanced settings → environment variables: {variables}",
        "create the app; the first build installs requirements.txt and downloads the model (several minutes)",
    ]
    return steps


@dataclass
class PublishedDemo:
    bundle: DemoBundle
    result: UploadResult | None  # None for a dry run
    url: str
    manual_steps: list[str] = field(default_factory=list)  # OpenXLab: left to do in the console


def publish_demo(*, hub: str, repo: str, model_id: str, adapter_id: str | None = None, bits: int | None = None,
                 hardware: str | None = None, private: bool = False, out: str | Path | None = None,
                 title: str | None = None, system_prompt: str | None = None, compare: bool = True,
                 check: bool = True, token_secret_env: str | None = None, git_remote: str | None = None,
                 source: str | None = None, dry_run: bool = False) -> PublishedDemo:
    """Build the bundle (pre-flight first); unless `dry_run`, upload it, set its variables and secrets, deploy."""
    hub = get_hub(hub).name
    out_path = Path(out).expanduser() if out else default_demo_out(hub, check_repo_id(repo))
    _check_demo_out(out_path)
    secrets = {}
    if token_secret_env:
        name = HUBS[hub].demo_secret
        secret = from_env(token_secret_env)
        if secret is None:
            raise InputError(f"--token-secret-env {token_secret_env}: that environment variable is empty.",
                             f"export {token_secret_env}=<a read token> first; it becomes the demo's {name} secret.")
        secrets[name] = secret
    bundle = build_demo(out_path, hub=hub, repo=repo, model_id=model_id, adapter_id=adapter_id, bits=bits,
                        hardware=hardware, title=title, system_prompt=system_prompt, compare=compare, check=check,
                        source=source)
    say(f"Pre-flight: {bundle.fit}")
    url = demo_url(hub, bundle.repo)
    api = HUBS[hub].demo_api
    steps = [] if api else openxlab_steps(bundle, git_remote)
    if dry_run or (not api and not git_remote):
        return PublishedDemo(bundle, None, url, steps)
    say(f"Uploading the demo bundle ({len(bundle.files)} files) to {url if api else git_remote} ...")
    with redacted_output():
        result = upload_demo(hub, bundle.path, bundle.files, bundle.repo, private=private,
                             message=f"Chat demo for {adapter_id or model_id} (python -m publish demo)",
                             variables=bundle.variables, secrets=secrets,
                             hardware=None if bundle.hardware.name == DEFAULT_HARDWARE[hub] else bundle.hardware.name,
                             work_dir=bundle.path.parent / f".git-{bundle.path.name}", git_remote=git_remote)
    return PublishedDemo(bundle, result, url if api else result.url, steps)


def handle(args) -> int:
    """`python -m publish demo ...`: the thin command-line wrapper (publish/cli.py holds its options)."""
    published = publish_demo(hub=args.hub, repo=args.repo, model_id=args.model, adapter_id=args.adapter,
                             bits=args.bits, hardware=args.hardware, private=args.private, out=args.out,
                             title=args.title, system_prompt=args.system_prompt, compare=args.compare,
                             check=args.check, token_secret_env=args.token_secret_env, git_remote=args.git_remote,
                             source=args.source, dry_run=args.dry_run)
    print_demo_plan(published, dry_run=args.dry_run)
    return 0
