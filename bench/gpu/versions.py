"""What a GPU queue run uses: Python, the device, and each package of the training and decoding stack as this
interpreter imports it (with the queue's PYTHONPATH: the carried wheels first), against the lock's pin.

Usage: python3 bench/gpu/versions.py OUT.json
"""

from __future__ import annotations

import json
import platform
import re
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["torch", "triton", "transformers", "tokenizers", "huggingface_hub", "peft", "accelerate", "bitsandbytes",
            "xtuner", "mmengine", "datasets", "liger-kernel", "deepspeed"]


def lock_pins() -> dict[str, str]:
    """requirements.txt's `name==version` lines, names normalised as PyPI does."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        match = re.match(r"([A-Za-z0-9_.-]+)==([^\s;#]+)", line.strip())
        if match:
            pins[normalise(match.group(1))] = match.group(2)
    return pins


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def main() -> int:
    import torch

    pins = lock_pins()
    packages = {}
    for name in PACKAGES:
        version, pin = installed(name), pins.get(normalise(name))
        # a local build tag (2.11.0+cu130) is not a different release
        packages[name] = {"version": version, "lock": pin,
                          "matches_lock": None if pin is None else (version or "").split("+")[0] == pin}
    cuda = torch.cuda.is_available()
    result = {"python": platform.python_version(), "machine": platform.machine(),
              "device": torch.cuda.get_device_name(0) if cuda else "cpu",
              "device_memory_gib": torch.cuda.get_device_properties(0).total_memory / 2**30 if cuda else None,
              "cuda": torch.version.cuda, "packages": packages}
    Path(sys.argv[1]).write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(f"python {result['python']}, {result['device']}")
    for name, info in packages.items():
        print(f"  {name:16} {info['version'] or '-':14} lock {info['lock'] or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
