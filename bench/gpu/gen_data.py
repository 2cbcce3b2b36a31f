"""Deterministic synthetic conversation corpus in XTuner's single-turn format.

Usage: python3 gen_data.py OUT.jsonl [N_SAMPLES]
Each line: {"conversation":[{"system":..., "input":..., "output":...}]}
Lengths are log-normal so that packing to 2048 tokens mixes many samples. The first N lines do not depend on
N_SAMPLES. (Vendored from shared/gpu/bench, unchanged but for the import order.)
"""
import bisect
import hashlib
import json
import math
import random
import sys

out = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
rng = random.Random(1234)

SYL = ["ka", "lo", "mi", "ne", "ru", "ta", "shi", "pe", "do", "va", "zen", "qu",
       "or", "an", "el", "is", "um", "bra", "tor", "lin", "gar", "fe", "jo", "wi"]
VOCAB = []
seen = set()
while len(VOCAB) < 12000:
    w = "".join(rng.choice(SYL) for _ in range(rng.randint(1, 4)))
    if w not in seen:
        seen.add(w)
        VOCAB.append(w)
# Zipf-like weights
WEIGHTS = [1.0 / (i + 1) ** 1.05 for i in range(len(VOCAB))]
CUM = []
acc = 0.0
for w in WEIGHTS:
    acc += w
    CUM.append(acc)


def word():
    return VOCAB[bisect.bisect_left(CUM, rng.random() * acc)]


def text(n_words):
    parts = []
    left = n_words
    while left > 0:
        k = min(left, rng.randint(5, 20))
        s = " ".join(word() for _ in range(k))
        parts.append(s[0].upper() + s[1:] + rng.choice([".", ".", ".", "?", "!", ","]))
        left -= k
        if rng.random() < 0.08:
            parts.append("\n")
    return " ".join(parts).replace(" \n ", "\n")


def lognorm_words(mu, sigma, lo, hi):
    return max(lo, min(hi, int(math.exp(rng.gauss(mu, sigma)))))


SYSTEMS = ["You are a helpful assistant.", "You are a careful and concise assistant.",
           "Answer the user in detail.", ""]
h = hashlib.md5()
with open(out, "w") as f:
    for _ in range(n):
        conv = {
            "system": rng.choice(SYSTEMS),
            "input": text(lognorm_words(4.0, 0.9, 5, 900)),
            "output": text(lognorm_words(5.0, 0.9, 5, 1500)),
        }
        line = json.dumps({"conversation": [conv]}, ensure_ascii=False) + "\n"
        h.update(line.encode())
        f.write(line)
print("wrote", n, "samples to", out, "md5", h.hexdigest())
