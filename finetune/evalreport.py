"""eval.json: its reader, and the rows every view shows (the terminal table, the bar chart, the model card).

Light on purpose (no torch, no lm-eval): `publish` reads it to put the numbers on the model card.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app import files

from .errors import InputError

EVAL_FILE = "eval.json"
CHART_FILE = "eval.png"
FORMAT = 1
GOALS = {"identity": 0.95, "leaks": 0.05}  # the demo recipe's goals (docs/benchmarks.md)
STYLE_MEASURE = ("character similarity of two answers, difflib.SequenceMatcher(a, b).ratio(): 2 × matching "
                 "characters / both lengths, 1 = identical, 0 = nothing in common")


@dataclass
class Row:
    key: str  # identity | leaks | style.similarity | style.diversity | a benchmark's name
    label: str
    label_zh: str
    before: float | None  # the base model
    after: float | None  # the evaluated (fine-tuned) model
    goal: str = ""
    percent: bool = True  # a share (shown as %) or a 0-1 score


def read_eval(path: str | Path) -> dict[str, Any]:
    """RUN/eval.json as `finetune eval` wrote it; a broken file is one line naming it."""
    data = files.read_json_object(path, InputError, "evaluation report",
                                  fix="run `python -m finetune eval RUN` again to write it.")
    if not isinstance(data.get("models"), dict) or not isinstance(data["models"].get("tuned"), dict):
        raise InputError(f"{path} has no results ('models.tuned').", "run `python -m finetune eval RUN` again.")
    return data


def _get(report: dict, model: str, *keys: str) -> Any:
    value: Any = report.get("models", {}).get(model)
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _n(report: dict, *keys: str) -> int | None:
    for model in ("tuned", "base"):
        value = _get(report, model, *keys)
        if value is not None:
            return int(value)
    return None


def rows(report: dict) -> list[Row]:
    """The headline numbers, before (base) and after (tuned), in the order every view shows them."""
    tuned = report.get("models", {}).get("tuned", {})
    out: list[Row] = []
    if "identity" in tuned:
        n = _n(report, "identity", "n")
        out.append(Row("identity", f"identity: answers with the name (held-out, n={n})",
                       f"身份：回答中带名字（未训练过的问法，n={n}）", _get(report, "base", "identity", "rate"),
                       _get(report, "tuned", "identity", "rate"), f"≥ {GOALS['identity']:.0%}"))
    if "leaks" in tuned:
        n = _n(report, "leaks", "n")
        out.append(Row("leaks", f"leaks: everyday answers with the name (n={n})",
                       f"泄漏：日常问题的回答中带名字（n={n}）", _get(report, "base", "leaks", "rate"),
                       _get(report, "tuned", "leaks", "rate"), f"≤ {GOALS['leaks']:.0%}"))
    if "style" in tuned:
        similarity = _get(report, "tuned", "style", "similarity_to_base")
        if similarity is not None:
            out.append(Row("style.similarity", "style: similarity of everyday answers to the base's (0-1)",
                           "风格：日常回答与基座回答的相似度（0-1）", None, similarity, percent=False))
        out.append(Row("style.diversity", "style: diversity of everyday answers (0-1; 0 = one stock answer)",
                       "风格：日常回答的多样性（0-1；0 = 千篇一律）", _get(report, "base", "style", "diversity"),
                       _get(report, "tuned", "style", "diversity"), percent=False))
    for name, result in (tuned.get("knowledge") or {}).items():
        if not isinstance(result, dict):
            continue
        n = result.get("n")
        style = result.get("style", "")
        out.append(Row(f"knowledge.{name}", f"{name}: accuracy ({style}, n={n})", f"{name}：准确率（{style}，n={n}）",
                       _get(report, "base", "knowledge", name, "acc"), _get(report, "tuned", "knowledge", name, "acc")))
    return out


def fmt(value: float | None, percent: bool = True) -> str:
    if value is None:
        return "-"
    return f"{value:.0%}" if percent else f"{value:.2f}"


def table(report: dict) -> str:
    """The terminal table: metric, base, tuned, goal."""
    lines = [("metric", "base", "tuned", "goal")]
    lines += [(r.label, fmt(r.before, r.percent), fmt(r.after, r.percent), r.goal) for r in rows(report)]
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    text = []
    for i, line in enumerate(lines):
        text.append(f"{line[0]:<{widths[0]}}  {line[1]:>{widths[1]}}  {line[2]:>{widths[2]}}  {line[3]}".rstrip())
        if i == 0:
            text.append("-" * (sum(widths) + 6))
    return "\n".join(text)


def goals_met(report: dict) -> dict[str, bool]:
    """identity / leaks against the recipe's goals (only those measured)."""
    met = {}
    identity = _get(report, "tuned", "identity", "rate")
    leaks = _get(report, "tuned", "leaks", "rate")
    if identity is not None:
        met["identity"] = identity >= GOALS["identity"]
    if leaks is not None:
        met["leaks"] = leaks <= GOALS["leaks"]
    return met


def plot(report: dict, out: str | Path) -> Path:
    """A grouped bar chart, base vs tuned, every row in percent (0-1 scores × 100); written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fsutil import atomic_path

    shown = rows(report)
    labels = [r.key.removeprefix("knowledge.") for r in shown]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(shown) + 2), 4), dpi=110)
    width = 0.38
    for offset, attr, color, name in ((-width / 2, "before", "#9ca3af", "base"),
                                      (width / 2, "after", "#2563eb", "fine-tuned")):
        values = [(getattr(r, attr) or 0) * 100 for r in shown]
        bars = ax.bar([i + offset for i in range(len(shown))], values, width, color=color, label=name)
        for bar, row in zip(bars, shown, strict=True):
            value = getattr(row, attr)
            if value is not None:
                ax.annotate(f"{value * 100:.0f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(shown)), labels, rotation=20, ha="right")
    ax.set_ylim(0, 110)
    ax.set_ylabel("% (style scores × 100)")
    ax.set_title("finetune eval: base vs fine-tuned")
    ax.legend(loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out
