#!/usr/bin/env bash
# Here, with the package registry, from the repository root (`make gpu-carry`): the wheels the GPU jobs
# (bench/gpu_queue.sh, bench/gpu_train.sh, bench/gpu_decode.sh) install on the offline GPU machine, in gpu-carry/
# (git-ignored), for its Python 3.12:
#   gpu-carry/bnb    bitsandbytes, trimmed to its CUDA 13 builds (the machine's torch is CUDA 13): 7 MB, not 42
#   gpu-carry/xt     XTuner's stack (../shared/gpu/fetch-wheels.sh), with the lock's own transformers, tokenizers,
#                    huggingface_hub, peft and accelerate (their == pins in requirements.txt) where it brings others
#   gpu-carry/liger  liger-kernel at finetune/speed.py's LIGER_PIN
#   gpu-carry/ds     DeepSpeed at the lock's pin, built here into a pure-Python wheel (PyPI has only its source; its
#                    ops compile on first use), and the dependencies the GPU image lacks, at the lock's pins
# A job carries the tree and gpu-carry/ (carry ["gpu-carry"]), at most 64 MiB together: checked at the end.
set -euo pipefail
limit_mib=64
[ -f ../shared/gpu/fetch-wheels.sh ] || { echo "../shared/gpu/fetch-wheels.sh not found: run from the repository root"; exit 2; }
get() {  # as fetch-wheels.sh does: wheels for the GPU machine's CPython 3.12 on x86_64 Linux
  local out=$1; shift
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$out" "$@"
}
rm -rf gpu-carry
bash ../shared/gpu/fetch-wheels.sh gpu-carry
# the versions users run: what the jobs measure must be the lock's code, not fetch-wheels' older pins
for package in transformers tokenizers huggingface_hub peft accelerate; do
  pin=$(grep -i "^${package}==" requirements.txt) || { echo "requirements.txt has no ${package}== pin"; exit 2; }
  if ! ls "gpu-carry/xt/${package}-${pin#*==}-"*.whl >/dev/null 2>&1; then
    rm -f "gpu-carry/xt/${package}-"[0-9]*.whl
    get gpu-carry/xt "$pin"
  fi
done
mkdir -p gpu-carry/ds
DS_BUILD_OPS=0 "${PYTHON:-.venv/bin/python}" -m pip wheel -q --no-deps --no-build-isolation -w gpu-carry/ds \
  "$(grep -i '^deepspeed==' requirements.txt)"
for package in hjson msgpack py-cpuinfo pydantic pydantic_core annotated-types typing-inspection psutil ninja; do
  get gpu-carry/ds "$(grep -i "^${package}==" requirements.txt)"
done
liger=$(sed -n 's/^LIGER_PIN = "\([^"]*\)".*/\1/p' finetune/speed.py)
get gpu-carry/liger "liger-kernel==${liger:?no LIGER_PIN in finetune/speed.py}"
# bitsandbytes' wheel holds a library per CUDA version (42 MB); the GPU image's torch is CUDA 13: keep cuda13x + cpu
python3 - gpu-carry/bnb/bitsandbytes-*.whl <<'EOF'
import re
import sys
import zipfile
from pathlib import Path

wheel = Path(sys.argv[1])
dropped = re.compile(r"bitsandbytes/libbitsandbytes_(cuda1[012]\d|rocm\d+)\.so$")
trimmed = wheel.with_suffix(".tmp")
with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(trimmed, "w", zipfile.ZIP_DEFLATED) as target:
    for item in source.infolist():
        if dropped.search(item.filename):
            continue
        data = source.read(item)
        if item.filename.endswith(".dist-info/RECORD"):
            data = b"".join(line for line in data.splitlines(keepends=True) if not dropped.search(line.split(b",")[0].decode()))
        target.writestr(item, data)
trimmed.replace(wheel)
print(f"{wheel.name}: {wheel.stat().st_size / 2**20:.1f} MiB")
EOF
ls gpu-carry/*/
# what a job sends: the tracked and the untracked-but-not-ignored files, plus gpu-carry/
python3 - "$limit_mib" <<'EOF'
import subprocess
import sys
from pathlib import Path

limit = int(sys.argv[1])
listed = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], capture_output=True, check=True)
tree = sum(p.stat().st_size for p in map(Path, listed.stdout.decode().split("\0")) if p.is_file())
carry = sum(p.stat().st_size for p in Path("gpu-carry").rglob("*") if p.is_file())
total = (tree + carry) / 2**20
print(f"a GPU job carries {total:.1f} MiB: the tree {tree / 2**20:.1f} MiB + gpu-carry/ {carry / 2**20:.1f} MiB "
      f"(limit {limit} MiB)")
if total > limit:
    sys.exit(f"over the {limit} MiB a job may carry: drop wheels from gpu-carry/ or large files from the tree")
EOF
