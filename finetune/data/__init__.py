"""`python -m finetune data identity|replay|convert|check`: build, convert and check training data."""

from __future__ import annotations

from . import check, convert, identity, replay

SUBVERBS = (identity, replay, convert, check)


def register(subparsers, formatter_class) -> None:
    parser = subparsers.add_parser(
        "data",
        help="build, convert and check training data (XTuner JSONL)",
        description="Training data in XTuner's format: {\"conversation\": [{\"system\", \"input\", \"output\"}]} "
        "one record per line. Build the identity set, record replay answers, convert spreadsheets and chat "
        "datasets, and check a file before training.",
        epilog="examples:\n"
        "  python -m finetune data identity --name 小薇 --name-en Xiaowei --out data/identity.jsonl\n"
        "  python -m finetune data replay --out data/replay.jsonl\n"
        "  python -m finetune data identity --name 小薇 --mix data/replay.jsonl --out data/train.jsonl\n"
        "  python -m finetune data convert examples/medqa/medqa_sample.xlsx --input-col 问题 --output-col 答案 \\\n"
        "      --out data/medqa.jsonl --split 0.9\n"
        "  python -m finetune data check data/train.jsonl",
        formatter_class=formatter_class,
    )
    sub = parser.add_subparsers(dest="data_verb", metavar="SUBVERB", required=True)
    for module in SUBVERBS:
        module.register(sub, formatter_class)
