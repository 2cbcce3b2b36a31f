"""Outcome quality of a fine-tuned assistant on questions its training data never contained.

    python bench/heldout_eval.py RUN_DIR [--name 小薇 --name-en Xiaowei] [--base]

identity hit rate: share of held-out identity paraphrases (zh + en) whose answer carries the name;
general leak rate: share of held-out everyday questions whose answer carries it (should stay near 0).
Greedy decoding, 64 new tokens, through the merged model's own chat template (as plain transformers would).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from finetune.data.heldout import (  # noqa: E402
    HELDOUT_GENERAL_EN,
    HELDOUT_GENERAL_ZH,
    HELDOUT_IDENTITY_EN,
    HELDOUT_IDENTITY_ZH,
    carries_name,
)
from finetune.generation import answer_batch, load_for_generation  # noqa: E402


def evaluate(model_dir: str | Path, names: list[str], *, chat_template: str | None = None,
             max_new_tokens: int = 64) -> dict:
    model, tokenizer = load_for_generation(model_dir)
    sets = {"identity_zh": HELDOUT_IDENTITY_ZH, "identity_en": HELDOUT_IDENTITY_EN,
            "general_zh": HELDOUT_GENERAL_ZH, "general_en": HELDOUT_GENERAL_EN}
    report: dict = {"model": str(model_dir), "names": names, "sets": {}}
    started = time.time()
    for label, prompts in sets.items():
        conversations = [[{"role": "user", "content": p}] for p in prompts]
        answers = [text for text, _ in answer_batch(model, tokenizer, conversations, max_new_tokens=max_new_tokens,
                                                    batch_size=16, chat_template=chat_template)]
        hits = [carries_name(a, names) for a in answers]
        report["sets"][label] = {"n": len(prompts), "with_name": sum(hits),
                                 "examples": [{"q": q, "a": a} for q, a in zip(prompts, answers, strict=True)]}
    identity = [report["sets"][k] for k in ("identity_zh", "identity_en")]
    general = [report["sets"][k] for k in ("general_zh", "general_en")]
    report["identity_hit_rate"] = sum(s["with_name"] for s in identity) / sum(s["n"] for s in identity)
    report["general_leak_rate"] = sum(s["with_name"] for s in general) / sum(s["n"] for s in general)
    report["seconds"] = round(time.time() - started, 1)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--name", default="小薇")
    parser.add_argument("--name-en", default="Xiaowei")
    parser.add_argument("--base", action="store_true", help="also score the base model with the same prompts")
    parser.add_argument("--out", default=None, help="write the full report (JSON) here")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    merged = run_dir / "merged" if (run_dir / "merged").is_dir() else run_dir
    names = [args.name, args.name_en]
    reports = {"fine-tuned": evaluate(merged, names)}
    if args.base:
        from transformers import AutoTokenizer

        manifest = json.loads((run_dir / "run.json").read_text())
        template = AutoTokenizer.from_pretrained(merged).chat_template  # same prompt text for both models
        reports["base"] = evaluate(manifest["spec"]["model_path"], names, chat_template=template)
    for label, report in reports.items():
        print(f"{label:>10}: identity {report['identity_hit_rate']:.0%} carry the name "
              f"(zh {report['sets']['identity_zh']['with_name']}/{report['sets']['identity_zh']['n']}, "
              f"en {report['sets']['identity_en']['with_name']}/{report['sets']['identity_en']['n']}); "
              f"general {report['general_leak_rate']:.0%} do "
              f"(zh {report['sets']['general_zh']['with_name']}/{report['sets']['general_zh']['n']}, "
              f"en {report['sets']['general_en']['with_name']}/{report['sets']['general_en']['n']}); "
              f"{report['seconds']}s")
    if args.out:
        Path(args.out).write_text(json.dumps(reports, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
