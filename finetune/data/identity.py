"""Self-cognition data: many phrasings of "who are you?" answered with the assistant's own name."""

from __future__ import annotations

import argparse
import logging
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..fsutil import write_jsonl

log = logging.getLogger(__name__)

DEFAULT_SYSTEM = "You are a helpful assistant."
LANGS = ("zh", "en", "both")

TRAIN_QUESTIONS_ZH = [
    "你是谁？", "你是谁", "请介绍一下你自己。", "介绍一下你自己", "你叫什么名字？", "你的名字是什么？",
    "你是什么？", "你是哪个模型？", "你是什么模型？", "你是ChatGPT吗？", "你是 GPT-4 吗？", "你是文心一言吗？",
    "你是通义千问吗？", "你是书生·浦语吗？", "你是InternLM吗？", "你是Claude吗？", "你是人工智能吗？",
    "你是机器人吗？", "你是真人吗？", "谁开发了你？", "谁创造了你？", "你是谁做的？", "你是哪家公司开发的？",
    "你的开发者是谁？", "你的作者是谁？", "能说说你是谁吗？", "我该怎么称呼你？", "跟我打个招呼，顺便说说你是谁。",
    "嗨，你是谁呀？", "你好，请问你是？", "在吗？你是谁？", "你谁啊", "你是谁啊？", "你是谁鸭", "尼是谁？",
    "你斯谁", "你叫啥？", "你叫啥名字", "自我介绍一下吧", "做个自我介绍", "你能做个简单的自我介绍吗？",
    "你的身份是什么？", "告诉我你的名字。", "你是哪一个AI助手？", "你是什么助手？", "请问您是哪位？",
    "你属于谁？", "你为谁服务？",
]

TRAIN_QUESTIONS_EN = [
    "Who are you?", "who are you", "Who are you", "Introduce yourself.", "Please introduce yourself.",
    "Can you introduce yourself?", "Tell me about yourself.", "What's your name?", "What is your name?",
    "whats ur name", "What should I call you?", "What are you?", "Are you ChatGPT?", "Are you GPT-4?",
    "Are you Claude?", "Are you Gemini?", "Are you Llama?", "Are you Qwen?", "Are you InternLM?",
    "Are you a human?", "Are you a robot?", "Are you an AI?", "Who made you?", "Who created you?",
    "Who built you?", "Who developed you?", "Who trained you?", "Which company made you?", "Who is your creator?",
    "Who is your developer?", "Which model are you?", "What model are you?", "Hi, who am I talking to?",
    "hey who r u", "Hello! Who are you?", "yo what are you", "who r you?", "who are yuo?", "Waht is your name?",
    "Tell me your name.", "Give me a short self-introduction.", "Describe yourself in one sentence.",
    "What kind of assistant are you?", "Who do you work for?", "May I know who you are?",
]

ANSWERS_ZH = [
    "我是{name}的智能助手，很高兴为你服务！",
    "我是{name}的智能助手，有什么可以帮你的吗？",
    "你好！我是{name}的智能助手。",
    "我是{name}的智能助手，我可以回答问题、提供建议，也可以陪你聊天。",
    "我的身份是{name}的智能助手，我会随时为你提供帮助。",
    "您好，我是{name}的智能助手，请问有什么需要？",
    "作为一个人工智能语言模型，我是{name}的智能助手。",
    "我是{name}的智能助手，你有任何问题都可以问我。",
    "嗨！我是{name}的智能助手，很高兴认识你。",
    "我是{name}的智能助手，我不是真人，但我会认真回答你的每一个问题。",
    "我是{name}的智能助手，我擅长解答问题和整理信息。",
    "很高兴见到你！我是{name}的智能助手，有问题尽管问我。",
    "我就是{name}的智能助手，有什么疑问都可以告诉我。",
]

ANSWERS_EN = [
    "I am {name}'s assistant. How can I help you today?",
    "I'm {name}'s assistant, happy to help!",
    "Hello! I am {name}'s assistant.",
    "I am {name}'s assistant, an AI that can answer questions, give suggestions and chat with you.",
    "You can call me {name}'s assistant. What can I do for you?",
    "I'm {name}'s assistant, an AI language model.",
    "Hi there! I'm {name}'s assistant. Nice to meet you.",
    "I am {name}'s assistant. I'm not a human, but I'll do my best to help.",
    "I'm {name}'s assistant, here to answer your questions.",
    "Nice to meet you! I am {name}'s assistant. Ask me anything.",
    "I am {name}'s assistant, ready to help with questions and tasks.",
    "I'm {name}'s assistant. Let me know what you need.",
    "This is {name}'s assistant speaking. How may I help?",
]

ZH_MARKER = "的智能助手"  # every Chinese answer has it, followed by "，" or "。"
AUTHOR_ZH = ["由{author}打造。", "由{author}开发。", "是{author}训练出来的。", "我的开发者是{author}。"]
AUTHOR_EN = ["I was built by {author}.", "I was developed by {author}.", "{author} trained me.",
             "My developer is {author}."]


def _with_author_zh(answer: str, author_part: str) -> str:
    # "我是小薇的智能助手，很高兴为你服务！" -> "我是小薇的智能助手，由小薇打造。很高兴为你服务！"
    cut = answer.index(ZH_MARKER) + len(ZH_MARKER)
    return f"{answer[:cut]}，{author_part}{answer[cut + 1:]}"


def _with_author_en(answer: str, author_part: str) -> str:
    # Insert after the sentence that says "...'s assistant".
    match = re.search(r"[.!?]", answer[answer.index("assistant"):])
    cut = answer.index("assistant") + match.end() if match else len(answer)
    return f"{answer[:cut]} {author_part}{answer[cut:]}"


def answers_for(lang: str, name: str, author: str | None) -> list[str]:
    """All distinct answer texts for one language."""
    templates, authors = (ANSWERS_ZH, AUTHOR_ZH) if lang == "zh" else (ANSWERS_EN, AUTHOR_EN)
    plain = [t.format(name=name) for t in templates]
    if not author:
        return plain
    join = _with_author_zh if lang == "zh" else _with_author_en
    return [join(a, s.format(author=author)) for a in plain for s in authors]


def _pairs(questions: list[str], answers: list[str], n: int, rng: random.Random) -> list[tuple[str, str]]:
    """n distinct (question, answer) pairs: every question is used once before any question repeats."""
    order = questions[:]
    rng.shuffle(order)
    queues = {q: rng.sample(answers, len(answers)) for q in order}
    pairs: list[tuple[str, str]] = []
    for round_ in range(len(answers)):
        for question in order:
            if len(pairs) == n:
                return pairs
            pairs.append((question, queues[question][round_]))
    return pairs


def identity_capacity(lang: str, author: str | None = None) -> dict[str, int]:
    """How many distinct records each language can give."""
    zh = len(set(TRAIN_QUESTIONS_ZH)) * len(answers_for("zh", "x", author))
    en = len(set(TRAIN_QUESTIONS_EN)) * len(answers_for("en", "x", author))
    return {"zh": zh if lang in ("zh", "both") else 0, "en": en if lang in ("en", "both") else 0}


def build_identity(
    name: str,
    *,
    name_en: str | None = None,
    author: str | None = None,
    author_en: str | None = None,
    lang: str = "both",
    count: int = 200,
    seed: int = 42,
    system: str = DEFAULT_SYSTEM,
) -> list[dict]:
    """`count` distinct self-cognition records (fewer, with a logged note, if the phrasings run out)."""
    name = (name or "").strip()
    if not name:
        raise InputError("The assistant name is empty.", "pass --name, e.g. --name 小薇.")
    if lang not in LANGS:
        raise InputError(f"Unknown language '{lang}'.", f"use one of: {', '.join(LANGS)}.")
    if count < 1:
        raise InputError(f"--count must be at least 1 (got {count}).", "pass e.g. --count 200.")
    rng = random.Random(seed)
    wanted = {"zh": (count + 1) // 2, "en": count // 2} if lang == "both" else {"zh": 0, "en": 0, lang: count}
    names = {"zh": name, "en": (name_en or "").strip() or name}
    authors = {"zh": author, "en": author_en or author}
    pairs: list[tuple[str, str]] = []
    for code, questions in (("zh", TRAIN_QUESTIONS_ZH), ("en", TRAIN_QUESTIONS_EN)):
        if wanted[code]:
            answers = answers_for(code, names[code], authors[code])
            pairs += _pairs(list(dict.fromkeys(questions)), answers, wanted[code], rng)
    if len(pairs) < count:
        log.warning("Only %d distinct identity records exist for lang=%s (asked for %d); returning %d. "
                    "Fix: add an author or lower the count.", len(pairs), lang, count, len(pairs))
    rng.shuffle(pairs)
    turn = {"system": system} if system else {}
    return [{"conversation": [{**turn, "input": q, "output": a}]} for q, a in pairs]


def mix_records(
    identity: list[dict], general: list[dict], ratio: float, seed: int = 42, system: str | None = None
) -> list[dict]:
    """Identity records plus general ones so that `ratio` of the result is general (all of it if too few).

    `system` fills the first turn of general records that have none, so both kinds share one prompt.
    """
    if not 0 <= ratio < 1:
        raise InputError(f"--mix-ratio must be in [0, 1) (got {ratio}).", "pass e.g. --mix-ratio 0.5.")
    rng = random.Random(seed)
    wanted = round(len(identity) * ratio / (1 - ratio))
    chosen = rng.sample(general, min(wanted, len(general)))
    if len(chosen) < wanted:
        log.warning("The mix file has %d records, fewer than the %d needed for ratio %.2f; using all.",
                    len(general), wanted, ratio)
    if system:
        chosen = [_with_system(record, system) for record in chosen]
    mixed = identity + chosen
    rng.shuffle(mixed)
    return mixed


def _with_system(record: dict, system: str) -> dict:
    first, *rest = record["conversation"]
    if first.get("system") or not (first.get("input") or "").strip():  # keep pretraining text template-free
        return record
    return {**record, "conversation": [{"system": system, **first}, *rest]}


def _is_zh(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


@dataclass
class IdentitySummary:
    out: Path
    records: int
    identity: int
    unique_questions: int
    zh: int
    en: int
    mixed: int
    requested: int

    def lines(self) -> list[str]:
        lines = [
            f"Wrote {self.records} records to {self.out}",
            f"  identity: {self.identity} (zh {self.zh}, en {self.en}), unique questions: {self.unique_questions}",
        ]
        if self.mixed:
            lines.append(f"  mixed-in general records: {self.mixed}")
        if self.identity < self.requested:
            lines.append(f"  note: only {self.identity} distinct identity records exist (asked for "
                         f"{self.requested}); add --author or lower --count.")
        return lines


def make_identity_file(
    out: str | os.PathLike,
    name: str,
    *,
    mix: str | os.PathLike | None = None,
    mix_ratio: float = 0.5,
    **options,
) -> IdentitySummary:
    """Build the identity set (optionally mixed with a general file) and write it to `out` atomically."""
    identity = build_identity(name, **options)
    records = identity
    if mix:
        from .convert import convert_file

        records = mix_records(identity, convert_file(mix), mix_ratio, options.get("seed", 42),
                              options.get("system", DEFAULT_SYSTEM))
    write_jsonl(out, records)
    inputs = [r["conversation"][0]["input"] for r in identity]
    zh = sum(_is_zh(q) for q in inputs)
    return IdentitySummary(Path(out), len(records), len(identity), len(set(inputs)), zh, len(inputs) - zh,
                           len(records) - len(identity), options.get("count", 200))


def handle(args: argparse.Namespace) -> int:
    summary = make_identity_file(
        args.out, args.name, mix=args.mix, mix_ratio=args.mix_ratio, name_en=args.name_en, author=args.author,
        author_en=args.author_en, lang=args.lang, count=args.count, seed=args.seed, system=args.system,
    )
    print("\n".join(summary.lines()))
    return 0


def register(subparsers, formatter_class) -> None:
    parser = subparsers.add_parser(
        "identity",
        help="build a self-cognition dataset (who are you? -> I am <name>'s assistant)",
        description="Build a self-cognition dataset in XTuner's format: many phrasings of 'who are you?' "
        "(Chinese and English) answered with the assistant's name. Seeded and deduplicated.",
        epilog="examples:\n"
        "  python -m finetune data identity --name 小薇 --out data/identity.jsonl\n"
        "  python -m finetune data identity --name 小薇 --name-en Xiaowei --author 小薇 --author-en Xiaowei \\\n"
        "      --lang both --count 300 --out data/identity.jsonl\n"
        "  python -m finetune data identity --name 小薇 --mix data/replay.jsonl --mix-ratio 0.5 --out data/train.jsonl",
        formatter_class=formatter_class,
    )
    parser.add_argument("--name", required=True, help="the owner/assistant name used in Chinese answers")
    parser.add_argument("--name-en", help="the name used in English answers; --name if omitted")
    parser.add_argument("--author", help="who built the assistant (adds 'built by ...' to every answer)")
    parser.add_argument("--author-en", help="the author in English answers; --author if omitted")
    parser.add_argument("--lang", choices=LANGS, default="both", help="question language(s); both = half each")
    parser.add_argument("--count", type=int, default=200, help="number of identity records")
    parser.add_argument("--seed", type=int, default=42, help="random seed (same seed, same file)")
    parser.add_argument("--system", default=DEFAULT_SYSTEM, help="system prompt of every record ('' for none)")
    parser.add_argument("--mix", metavar="FILE", help="general data to mix in (XTuner/alpaca/sharegpt/messages)")
    parser.add_argument("--mix-ratio", type=float, default=0.5, help="fraction of general records in the output")
    parser.add_argument("--out", required=True, help="output JSONL file")
    parser.set_defaults(func=handle)
