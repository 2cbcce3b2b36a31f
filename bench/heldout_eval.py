"""Outcome quality of a fine-tuned assistant on questions its training data never contained.

    python bench/heldout_eval.py RUN_DIR [--name 小薇 --name-en Xiaowei] [--base] [--out report.json]

identity hit rate: share of held-out identity paraphrases (zh + en) whose answer carries the name;
general leak rate: share of held-out everyday questions whose answer carries it (should stay near 0).
This is `python -m finetune eval RUN --tasks identity leaks` (the question pools live in
finetune/data/heldout.py): greedy decoding, 64 new tokens, through the merged model's own chat template; with
--base the base answers the same prompt text. The run's names are read from run.json unless given.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from finetune.evaluate import EvalOptions, run_eval  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--name", default=None)
    parser.add_argument("--name-en", default=None)
    parser.add_argument("--base", action="store_true", help="also score the base model with the same prompts")
    parser.add_argument("--out", default=None, help="write the full report (JSON) here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:  # the verb's eval.json/eval.png, not the run's own
        report = run_eval(EvalOptions(target=args.run_dir, base=args.base, tasks=["identity", "leaks"],
                                      names=[n for n in (args.name, args.name_en) if n], out=scratch))
    for label, result in report["models"].items():
        identity, general = result["identity"], result["leaks"]
        zh, en = identity["by_lang"]["zh"], identity["by_lang"]["en"]
        gzh, gen = general["by_lang"]["zh"], general["by_lang"]["en"]
        print(f"{label:>10}: identity {identity['rate']:.0%} carry the name (zh {zh['with_name']}/{zh['n']}, "
              f"en {en['with_name']}/{en['n']}); general {general['rate']:.0%} do (zh {gzh['with_name']}/{gzh['n']}, "
              f"en {gen['with_name']}/{gen['n']})")
    print(f"{report['seconds']}s")
    if args.out:
        report.pop("written", None)  # the scratch folder is gone
        Path(args.out).write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
