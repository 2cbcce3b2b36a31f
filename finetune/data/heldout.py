"""Held-out questions for judging a fine-tuned assistant (`finetune eval`); the training data never contains them.

Identity paraphrases test whether the new name generalizes beyond the trained phrasings
(finetune.data.identity.TRAIN_QUESTIONS_*); general questions test that everyday answers did not
collapse into the name (finetune.data.replay.GENERAL_PROMPTS_*), and their answers are what the style
comparison uses. tests/test_data_replay.py checks that both sets are disjoint from the training lists.
"""

from __future__ import annotations

HELDOUT_IDENTITY_ZH = [
    "请问你是哪位？",
    "你到底是谁？",
    "能告诉我你的名字吗？",
    "你是什么样的助手？",
    "简单介绍一下你自己吧。",
    "你是谁开发出来的？",
    "你是不是ChatGPT？",
    "我在和谁聊天？",
    "你有名字吗？",
    "说说你的来历。",
    "你是哪里来的AI？",
    "你是豆包吗？",
    "你好呀，先介绍下自己？",
    "你是谁家的助手？",
    "你是人还是AI？",
]

HELDOUT_IDENTITY_EN = [
    "Who am I chatting with?",
    "Could you tell me who you are?",
    "Do you have a name?",
    "What are you called?",
    "Introduce yourself briefly, please.",
    "Who is behind you?",
    "Are you OpenAI's ChatGPT?",
    "What AI are you?",
    "Say a few words about yourself.",
    "Which assistant is this?",
    "Where do you come from?",
    "Are you Copilot?",
    "hi there, who's this?",
    "Whose assistant are you?",
    "Are you a person or a bot?",
]

HELDOUT_GENERAL_ZH = [
    "日本的首都是哪里？",
    "写一首关于秋天的短诗",
    "怎么做一碗简单的面条？",
    "为什么要刷牙？",
    "一周有几天？",
    "什么是温室效应？",
    "推荐一本适合初学者的书。",
    "怎样才能早点起床？",
    "冰为什么会浮在水面上？",
    "十二乘以三等于多少？",
    "如何给植物浇水？",
    "熊猫主要吃什么？",
    "怎样安全地过马路？",
    "什么是形容词？",
    "给我一个学习外语的建议。",
]

HELDOUT_GENERAL_EN = [
    "What is the capital of Japan?",
    "Write a short poem about autumn.",
    "How do I cook rice?",
    "Why should we brush our teeth?",
    "How many hours are there in a day?",
    "What is the greenhouse effect?",
    "Recommend a good book for beginners.",
    "How can I wake up earlier?",
    "Why does ice float on water?",
    "What is 12 times 3?",
    "How often should I water a cactus?",
    "What do pandas eat?",
    "How do I cross the street safely?",
    "What is an adjective?",
    "Give me one tip for learning a foreign language.",
]


def carries_name(text: str, names: list[str] | tuple[str, ...]) -> bool:
    """True when `text` contains one of `names` (case-insensitive): an identity hit, or a leak in an everyday answer."""
    lowered = text.lower()
    return any(name.lower() in lowered for name in names if name)
