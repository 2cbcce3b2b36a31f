#!/usr/bin/env bash
# Here, with network, from the repository root: what the GPU jobs (bench/gpu_train.sh, bench/gpu_decode.sh) carry.
#   gpu-carry/{bnb,xt,liger}  the XTuner stack's wheels (git-ignored); bitsandbytes trimmed to its CUDA 13 builds
#   shared/gpu/bench          a copy of ../shared/gpu/bench (../shared does not travel; git-ignored here)
# Then run each job with carry ["gpu-carry"] (about 30 MB with the project).
set -euo pipefail
[ -d ../shared/gpu/bench ] || { echo "../shared/gpu/bench not found: run from the repository root"; exit 2; }
bash ../shared/gpu/fetch-wheels.sh gpu-carry
# fetch-wheels.sh brings peft 0.14.0; the LoRA layers measured must be the ones users run: the lock's peft
peft=$(grep -i '^peft==' requirements.txt)
rm -f gpu-carry/xt/peft-*.whl
python3 -m pip download -q --no-deps "$peft" -d gpu-carry/xt
python3 -m pip download -q --no-deps liger-kernel==0.5.10 -d gpu-carry/liger
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
mkdir -p shared/gpu .git/info
rm -rf shared/gpu/bench && cp -r ../shared/gpu/bench shared/gpu/
grep -qx "/shared/" .git/info/exclude 2>/dev/null || echo "/shared/" >> .git/info/exclude
du -sh gpu-carry shared
