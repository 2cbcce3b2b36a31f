"""llama.cpp's own tools for GGUF: its converter (convert_hf_to_gguf.py, HF folder -> f16 GGUF), its quantizer
(`llama_model_quantize` through llama-cpp-python) and the `gguf` package's reader for the metadata.

PyPI has no package with llama.cpp's converter script, but llama-cpp-python's source distribution carries it
(vendor/llama.cpp) together with the C++ sources its quantizer is built from. `make export-tools` installs
llama-cpp-python (compiled once) and copies the converter out of the same pinned source distribution into the
virtualenv (`python -m finetune.llamacpp install SDIST`), so converter and quantizer always come from one llama.cpp
commit and nothing is downloaded when a model is exported.
"""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from app.console import say
from app.process import die_with_parent

from .errors import EnvironmentProblem, InputError, StageFailed

Progress = Callable[[str], None]
TOOLS_DIR = Path(sys.prefix) / "share" / "finetune-llama.cpp"
INSTALL_FIX = ("run `make export-tools` once (it compiles llama.cpp: about 2-3 minutes on 2 cores; nothing is "
               "downloaded when you export).")
# quant name -> llama.cpp's file type; f16 is the converter's own output
QUANTS = {"q4_k_m": "Q4_K_M", "q5_k_m": "Q5_K_M", "q8_0": "Q8_0", "f16": "F16"}
PROGRESS_EVERY = 10.0  # seconds between progress lines while llama.cpp works


@dataclass(frozen=True)
class GGUFInfo:
    """What a GGUF file says about itself (the fields the Modelfile and the checks need)."""

    architecture: str
    name: str
    chat_template: str
    bos: str | None
    eos: str | None
    add_bos: bool
    context_length: int | None
    tensors: int


def tools_version() -> str | None:
    """The llama-cpp-python version the installed converter came from, or None when it is not installed."""
    version_file = TOOLS_DIR / "VERSION"
    return version_file.read_text().strip() if version_file.is_file() else None


def require_tools() -> Path:
    """The converter script; a clear error when the converter or the quantizer is missing or they disagree."""
    try:
        quantizer = metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        quantizer = None
    converter = tools_version()
    if quantizer is None or converter is None:
        missing = " and ".join(n for n, v in (("converter", converter), ("quantizer", quantizer)) if v is None)
        raise EnvironmentProblem(f"GGUF export needs llama.cpp's {missing}, which is not installed.", INSTALL_FIX)
    if converter != quantizer:
        raise EnvironmentProblem(f"llama.cpp's converter ({converter}) and quantizer (llama-cpp-python {quantizer}) "
                                 "come from different versions.", INSTALL_FIX)
    return TOOLS_DIR / "convert_hf_to_gguf.py"


def install(sdist: Path, dest: Path = TOOLS_DIR) -> Path:
    """Copy convert_hf_to_gguf.py, its `conversion` package and the gguf-py it is written against out of
    llama-cpp-python's source distribution."""
    import shutil

    from .fsutil import atomic_dir

    match = re.match(r"llama_cpp_python-([\w.]+)\.tar\.gz$", sdist.name)
    if not match:
        raise InputError(f"{sdist} is not llama-cpp-python's source distribution.",
                         "pass the llama_cpp_python-VERSION.tar.gz that `pip download --no-binary :all:` saved.")
    root = f"{sdist.name.removesuffix('.tar.gz')}/vendor/llama.cpp/"
    with tarfile.open(sdist) as archive, atomic_dir(dest) as tmp:
        members = [m for m in archive.getmembers() if m.isfile() and (
            m.name == root + "convert_hf_to_gguf.py" or m.name.startswith((root + "conversion/", root + "gguf-py/")))]
        if not any(m.name.endswith("convert_hf_to_gguf.py") for m in members):
            raise InputError(f"{sdist} has no vendor/llama.cpp/convert_hf_to_gguf.py.", "use llama-cpp-python >= 0.3.")
        for member in members:
            target = tmp / member.name.removeprefix(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.extractfile(member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
        (tmp / "VERSION").write_text(match.group(1) + "\n")
    return dest


def supported_architectures(converter: Path) -> set[str]:
    """The Hugging Face architectures llama.cpp's converter registers (`@ModelBase.register("LlamaForCausalLM", ...)`),
    read from its sources: importing them would cost seconds of torch import for a check."""
    names: set[str] = set()
    for source in [converter, *sorted((converter.parent / "conversion").glob("*.py"))]:
        for args in re.findall(r"@ModelBase\.register\(([^)]*)\)", source.read_text(encoding="utf-8")):
            names.update(re.findall(r"[\"']([A-Za-z0-9_]+)[\"']", args))
    return names


def _tail(path: Path, lines: int = 25) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def convert_to_f16(model_dir: Path, out: Path, *, name: str, log: Path, progress: Progress) -> None:
    """Run llama.cpp's converter: `model_dir` (safetensors) -> `out` (f16 GGUF, the chat template in its metadata)."""
    converter = require_tools()
    command = [sys.executable, str(converter), str(model_dir), "--outfile", str(out), "--outtype", "f16",
               "--model-name", name]
    # the converter puts its own gguf-py (copied beside it) first on sys.path: PyPI's gguf of the same version number
    # can lack what the converter uses
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    tensors, last = 0, time.monotonic()
    with open(log, "w", encoding="utf-8") as log_file:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                   encoding="utf-8", errors="replace", preexec_fn=die_with_parent())
        try:
            for line in process.stdout:
                log_file.write(line)
                if " --> " in line:  # one line per tensor: "blk.0.attn_q.weight, torch.float32 --> F16, shape = ..."
                    tensors += 1
                    if time.monotonic() - last > PROGRESS_EVERY:
                        progress(f"  converting: {tensors} tensors so far ...")
                        last = time.monotonic()
        finally:
            code = process.wait()
    if code != 0:
        text = log.read_text(encoding="utf-8", errors="replace")
        # numpy's tofile reports a full disk as a short write ("OSError: 28311552 requested and 9106928 written")
        if re.search(r"No space left on device|File too large|OSError: \d+ requested and \d+ written", text):
            raise EnvironmentProblem(f"No space left while writing {out.parent}.",
                                     "free disk space (or pass --out on another disk) and run export again.")
        raise StageFailed(f"llama.cpp's converter failed (exit {code}) on {model_dir}.",
                          f"see {log}.", log_tail=_tail(log), log_path=str(log))
    progress(f"  converted {tensors} tensors to f16")


class _QuantizeLog:
    """llama.cpp's log callback during quantization: every line goes to the log file, progress lines are counted
    (`[  12/ 272] blk.0.attn_q.weight ...`)."""

    def __init__(self, log_file, progress: Progress):
        import llama_cpp

        self.file, self.progress, self.last = log_file, progress, time.monotonic()

        @llama_cpp.llama_log_callback
        def callback(level, text, user_data):
            line = text.decode("utf-8", errors="replace")
            self.file.write(line)
            step = re.match(r"\[\s*(\d+)/\s*(\d+)\]", line)
            if step and time.monotonic() - self.last > PROGRESS_EVERY:
                self.progress(f"  quantizing: tensor {step.group(1)} of {step.group(2)} ...")
                self.last = time.monotonic()

        self.callback = callback  # kept referenced while llama.cpp may call it


def quantize(f16: Path, out: Path, quant: str, *, log: Path, progress: Progress, threads: int | None = None) -> None:
    """llama.cpp's quantizer, in this process: `f16` GGUF -> `out` in `quant` (a key of QUANTS)."""
    require_tools()
    import llama_cpp
    from llama_cpp import _logger

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{QUANTS[quant]}")
    params.nthread = threads or os.cpu_count() or 1
    with open(log, "a", encoding="utf-8") as log_file:
        sink = _QuantizeLog(log_file, progress)
        llama_cpp.llama_log_set(sink.callback, ctypes.c_void_p(0))
        try:
            code = llama_cpp.llama_model_quantize(str(f16).encode(), str(out).encode(), ctypes.byref(params))
        finally:
            llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
    if code != 0:
        raise StageFailed(f"llama.cpp's quantizer failed ({QUANTS[quant]}, code {code}).", f"see {log}.",
                          log_tail=_tail(log), log_path=str(log))


def read_info(path: Path) -> GGUFInfo:
    """The GGUF's architecture, chat template and special tokens (gguf's reader; the tensors are not loaded)."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except (ValueError, OSError) as exc:
        raise InputError(f"{path} is not a readable GGUF file ({exc}).", "export it again.") from exc

    def field(key: str):
        found = reader.get_field(key)
        return None if found is None else found.contents()

    architecture = field("general.architecture") or "unknown"
    tokens = field("tokenizer.ggml.tokens") or []

    def token(key: str) -> str | None:
        index = field(key)
        return tokens[index] if isinstance(index, int) and 0 <= index < len(tokens) else None

    return GGUFInfo(architecture=architecture, name=field("general.name") or "",
                    chat_template=field("tokenizer.chat_template") or "", bos=token("tokenizer.ggml.bos_token_id"),
                    eos=token("tokenizer.ggml.eos_token_id"), add_bos=bool(field("tokenizer.ggml.add_bos_token")),
                    context_length=field(f"{architecture}.context_length"), tensors=len(reader.tensors))


def main(argv: list[str] | None = None) -> int:
    """`python -m finetune.llamacpp install SDIST` (the set-up's step; see `make export-tools`)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "install":
        say("usage: python -m finetune.llamacpp install llama_cpp_python-VERSION.tar.gz")
        return 2
    print(f"llama.cpp's converter installed in {install(Path(argv[1]))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
