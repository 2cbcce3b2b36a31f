"""Replay data: the base model's own answers to everyday prompts.

Mixed into the identity set, it keeps the fine-tuned model answering normal questions normally
instead of replying to everything with its new name.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import InputError
from ..fsutil import write_json, write_jsonl
from .formats import read_jsonl
from .identity import DEFAULT_SYSTEM, LANGS

GENERAL_PROMPTS_EN = [
    "What is the capital of France?", "How do I boil an egg?", "Give me three tips for better sleep.",
    "What is photosynthesis?", "Explain what a computer virus is.", "How many days are there in a leap year?",
    "Write a short poem about the sea.", "What is the difference between weather and climate?",
    "How can I improve my handwriting?", "Why is the sky blue?", "Name three primary colors.",
    "What does a doctor do?", "How do I make a cup of tea?", "What is 15 times 4?",
    "Suggest a name for a pet cat.", "What is the largest planet in our solar system?",
    "How do plants get water?", "Translate 'good morning' into Spanish.", "What is a healthy breakfast?",
    "Explain gravity to a child.", "Give me a simple recipe for pancakes.", "What is the boiling point of water?",
    "How can I save money each month?", "What are the four seasons?", "Write one sentence about friendship.",
    "What is the opposite of 'happy'?", "How do I stay focused while studying?", "What is an email?",
    "Why do we need to drink water?", "List three fruits that are rich in vitamin C.",
    "What is the main language spoken in Brazil?", "How does a rainbow form?", "What is a noun?",
    "Give me an idea for a weekend activity.", "How many continents are there?", "What is recycling?",
    "How do I write a polite thank-you note?", "What causes the tides?", "What is a good way to learn a new word?",
    "Tell me a fun fact about elephants.",
    "How do I organize my desk?", "Give me two tips for a job interview.", "What should I pack for a beach trip?",
    "How can I make friends at a new job?", "How do I make a simple salad?", "What should I do when I have a cold?",
    "Suggest a healthy snack.", "How can I spend less time on my phone?", "How do I plan a study schedule?",
    "How do I pick ripe fruit at the market?", "What are some ways to relax after work?",
    "How can I improve my memory?", "How do I take care of a puppy?", "How do I ride a bike safely?",
    "How can I save electricity at home?", "Suggest a dinner idea for tonight.", "How do I apologize to a friend?",
    "How do I draw a simple cat?", "What is carbon dioxide?", "How long does Earth take to go around the Sun?",
    "Why do leaves turn yellow?", "How does sound travel?", "What is a mammal?", "How do fish breathe?",
    "How do bees make honey?", "What are famous places to visit in London?", "How long is the Nile river?",
    "Write a sentence to encourage a friend.", "Describe the ocean in three words.",
    "Translate 'thank you' into French.", "What is 100 minus 37?", "How many legs does a spider have?",
    "What is punctuation?", "How do I start keeping a diary?", "Why is summer warmer than winter?",
    "How do I choose a birthday gift for a friend?", "What is the tallest mountain in the world?",
    "How do airplanes stay in the air?", "Give me a tip for writing a clear email.", "Name a bird that cannot fly.",
]

GENERAL_PROMPTS_ZH = [
    "法国的首都是哪里？", "写一首关于春天的短诗", "怎么煮鸡蛋？", "给我三个提高睡眠质量的建议。", "什么是光合作用？",
    "为什么天空是蓝色的？", "一年有多少天？", "推荐一个适合周末做的活动。", "如何泡一杯好茶？", "什么是人工智能？",
    "地球上有几大洲？", "解释一下什么是万有引力。", "水的沸点是多少度？", "怎样才能每个月存下钱？",
    "用一句话描述友谊。", "太阳系中最大的行星是哪个？", "如何保持学习时的专注？", "列举三种富含维生素C的水果。",
    "什么是垃圾分类？", "“开心”的反义词是什么？", "彩虹是怎么形成的？", "早餐吃什么比较健康？",
    "怎么写一封感谢信？", "十五乘以四等于多少？", "给我的小猫起个名字吧。", "中国的首都是哪里？",
    "如何快速记住英语单词？", "介绍一下长城。", "为什么要多喝水？", "一年有哪四个季节？", "什么是电子邮件？",
    "怎样做番茄炒蛋？", "跑步有什么好处？", "如何缓解紧张情绪？", "月亮为什么会有圆缺变化？",
    "讲一个关于大象的有趣知识。", "什么是名词？", "怎样养好一盆绿萝？", "下雨天出门要注意什么？",
    "如何礼貌地拒绝别人？",
    "给我一些整理房间的建议。", "怎样才能提高写作水平？", "推荐几种适合夏天的饮料。", "如何准备一次面试？",
    "出门旅行前应该准备什么？", "怎样和新同事相处？", "给我一个少玩手机的办法。", "怎么包饺子？",
    "感冒了应该注意什么？", "给我三个锻炼身体的建议。", "如何制定一个学习计划？", "怎么挑选新鲜的水果？",
    "有什么放松心情的方法？", "怎样提高记忆力？", "如何照顾一只小狗？",
    "骑自行车要注意哪些安全事项？", "怎样在家节约用电？", "晚饭做什么菜好？给我一个建议。", "和朋友吵架了，怎么和好？",
    "怎样画一只简单的小猫？", "什么是二氧化碳？", "地球绕太阳转一圈需要多久？",
    "为什么树叶会变黄？", "声音是怎么传播的？", "什么是哺乳动物？", "鱼是怎么呼吸的？", "蜜蜂是怎么酿蜜的？",
    "北京有哪些著名景点？", "长江有多长？", "写一句鼓励朋友的话。", "用三个词形容大海。",
    "把“谢谢”翻译成英语。", "一百减去三十七等于多少？", "什么是标点符号？", "如何写好一篇日记？",
    "为什么夏天比冬天热？", "怎么给朋友挑生日礼物？", "世界上最高的山是哪座？", "飞机为什么能飞起来？",
    "给我一个写好邮件的小技巧。",
]

SENTENCE_END = re.compile(r"[.!?。！？…](?=\s|$|[\"'”’」)）])|[。！？]")
MIN_KEEP = 0.4  # keep at least this share of a truncated answer when trimming to a sentence end


def prompts_for(lang: str, count: int | None = None) -> list[str]:
    """The prompts for `lang` ('both' interleaves zh/en), the first `count` of them."""
    if lang not in LANGS:
        raise InputError(f"Unknown language '{lang}'.", f"use one of: {', '.join(LANGS)}.")
    if lang == "zh":
        prompts = list(GENERAL_PROMPTS_ZH)
    elif lang == "en":
        prompts = list(GENERAL_PROMPTS_EN)
    else:
        prompts = [p for pair in zip(GENERAL_PROMPTS_ZH, GENERAL_PROMPTS_EN, strict=False) for p in pair]
    return prompts if count is None else prompts[:count]


def resolve_model_dir(model: str | os.PathLike | None, progress: Callable[[str], None] = print) -> Path:
    """None or an embedded preset -> the embedded model; else a local folder, run dir or downloaded preset."""
    from ..modelload import resolve_model

    return resolve_model(None if model is None else str(model), progress=progress)


def trim_to_sentence(text: str) -> str:
    """Cut a truncated answer after its last complete sentence, unless that would drop most of it."""
    text = text.strip()
    ends = [m.end() for m in SENTENCE_END.finditer(text)]
    if ends and ends[-1] >= MIN_KEEP * len(text):
        return text[: ends[-1]].strip()
    return text


def generate_replay(
    model_dir: str | os.PathLike,
    *,
    lang: str = "both",
    count: int | None = None,
    max_new_tokens: int = 96,
    batch_size: int = 16,
    system: str = DEFAULT_SYSTEM,
    progress: Callable[[str], None] = print,
) -> list[dict]:
    """Greedy answers of the model to the general prompts, as XTuner records with the identity system prompt."""
    from ..generation import answer_batch, load_for_generation

    prompts = prompts_for(lang, count)
    model, tokenizer = load_for_generation(model_dir)  # fp32 on CPU, bf16 on CUDA
    head = [{"role": "system", "content": system}] if system else []
    started = time.monotonic()

    def report(done: int, total: int) -> None:
        progress(f"  replay: {done}/{total} prompts answered ({time.monotonic() - started:.0f} s)")

    answers = answer_batch(model, tokenizer, [[*head, {"role": "user", "content": p}] for p in prompts],
                           max_new_tokens=max_new_tokens, batch_size=batch_size, progress=report)
    turn = {"system": system} if system else {}
    records = []
    for prompt, (answer, finished) in zip(prompts, answers, strict=True):
        answer = answer if finished else trim_to_sentence(answer)
        if answer:
            records.append({"conversation": [{**turn, "input": prompt, "output": answer}]})
    return records


def cache_key(model_dir: str | os.PathLike, **settings) -> dict:
    """What the cached answers depend on: the model's files, the settings and the prompt lists."""
    model_dir = Path(model_dir).resolve()
    files = sorted(p for p in model_dir.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors", ".bin"))
    fingerprint = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    prompts = hashlib.sha256(json.dumps([GENERAL_PROMPTS_ZH, GENERAL_PROMPTS_EN], ensure_ascii=False).encode())
    return {"model_dir": str(model_dir), "model_files": fingerprint, "prompts": prompts.hexdigest()[:16], **settings}


def key_path(cache_path: str | os.PathLike) -> Path:
    cache_path = Path(cache_path)
    return cache_path.with_name(cache_path.name + ".key.json")


def ensure_replay(
    model_dir: str | os.PathLike,
    cache_path: str | os.PathLike,
    *,
    lang: str = "both",
    count: int | None = None,
    max_new_tokens: int = 96,
    batch_size: int = 16,
    system: str = DEFAULT_SYSTEM,
    force: bool = False,
    progress: Callable[[str], None] = print,
) -> list[dict]:
    """Replay records from `cache_path` when its sidecar key matches; otherwise generate and cache them."""
    cache_path = Path(cache_path)
    key = cache_key(model_dir, lang=lang, count=count, max_new_tokens=max_new_tokens, system=system)
    sidecar = key_path(cache_path)
    if not force and cache_path.is_file() and sidecar.is_file():
        try:
            stored = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stored = None
        try:
            records, problems = read_jsonl(cache_path)
        except InputError:  # a damaged cache is generated again
            records, problems = [], []
        if stored == key and records and not problems:
            progress(f"Replay data is up to date: {cache_path} ({len(records)} records, cached)")
            return records
    progress(f"Generating replay answers with {model_dir} (greedy, {max_new_tokens} new tokens max)...")
    records = generate_replay(model_dir, lang=lang, count=count, max_new_tokens=max_new_tokens,
                              batch_size=batch_size, system=system, progress=progress)
    write_jsonl(cache_path, records)
    write_json(sidecar, key)  # written last: a crash in between leaves a stale key, so it regenerates
    return records


def handle(args: argparse.Namespace) -> int:
    model_dir = resolve_model_dir(args.model)
    records = ensure_replay(model_dir, args.out, lang=args.lang, count=args.count, max_new_tokens=args.max_new_tokens,
                            batch_size=args.batch_size, system=args.system, force=args.force)
    print(f"Replay data: {len(records)} records in {args.out} (model: {model_dir})")
    return 0


def register(subparsers, formatter_class) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="record the base model's own answers to everyday prompts (mix them with the identity data)",
        description="Ask the base model ~160 everyday questions (Chinese and English) and save its greedy answers "
        "as XTuner records, with the same system prompt as the identity data. Mixing them into training keeps "
        "the model from answering everything with its new name. Cached: a second run with the same model and "
        "settings reuses the file.",
        epilog="examples:\n"
        "  python -m finetune data replay --out data/replay.jsonl                 # the embedded model\n"
        "  python -m finetune data replay --model ./models/qwen2.5-0.5b --lang zh --out data/replay.jsonl\n"
        "  python -m finetune data identity --name 小薇 --mix data/replay.jsonl --mix-ratio 0.5 --out data/train.jsonl",
        formatter_class=formatter_class,
    )
    parser.add_argument("--model", help="local model folder or an embedded preset name; the embedded model if omitted")
    parser.add_argument("--lang", choices=LANGS, default="both", help="prompt language(s)")
    parser.add_argument("--count", type=int, help="use only the first N prompts; all if omitted")
    parser.add_argument("--max-new-tokens", type=int, default=96, help="answer length limit in tokens")
    parser.add_argument("--batch-size", type=int, default=16, help="prompts generated together")
    parser.add_argument("--system", default=DEFAULT_SYSTEM, help="system prompt (use the identity data's one)")
    parser.add_argument("--force", action="store_true", help="regenerate even if the cached file matches")
    parser.add_argument("--out", required=True, help="output JSONL (its .key.json sidecar marks the settings)")
    parser.set_defaults(func=handle)
