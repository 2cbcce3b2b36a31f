"""Kept knowledge: multiple-choice accuracy, scored by lm-evaluation-harness (the log-likelihood of each option).

Where the questions come from (`finetune eval --tasks ...`):
- `sample`: the quick sample shipped in finetune/data/knowledge (hand-written, zh + en, known answers; its
  README says why it is not MMLU itself); scored cloze-style (the option's text), which small models can do.
- a local folder in MMLU, C-Eval or CMMLU layout (the layout is recognised from the files); scored as the engine
  scores those benchmarks: its own prompt and description for the subject, the option letter's log-likelihood.
- an lm-evaluation-harness task or group name (`mmlu`, `cmmlu`, `ceval-valid`, `arc_easy`, ...) or the hub dataset
  id of one of the three benchmarks: the engine's own task, which downloads its data (needs the network once).

lm-evaluation-harness builds the prompts, asks the model for the log-likelihoods and computes the accuracy; this
module reads the files, hands the engine its task configs, and adds the subjects up weighted by their size (as the
engine's MMLU group does).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app import files
from app.console import say

from .errors import DataError, EnvironmentProblem, InputError

SAMPLE_DIR = Path(__file__).parent / "data" / "knowledge"
LETTERS = "ABCD"
STYLES = ("letter", "cloze")
# hub dataset ids of the three benchmarks -> the engine's task for them (C-Eval's test answers are hidden: val)
HUB_IDS = {"cais/mmlu": "mmlu", "hails/mmlu_no_train": "mmlu", "ceval/ceval-exam": "ceval-valid",
           "haonan-li/cmmlu": "cmmlu"}
# the sample's subjects in Chinese, for its zh prompt description
SAMPLE_SUBJECTS_ZH = {"geography": "地理", "science": "科学", "math": "数学", "daily_life": "生活常识"}
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Question:
    question: str
    choices: tuple[str, str, str, str]
    answer: int  # index into choices
    subject: str


@dataclass
class Benchmark:
    """Questions read from a folder, per subject, ready to be handed to the engine."""

    name: str  # its key in eval.json: sample-en, sample-zh, mmlu, ceval, cmmlu
    layout: str  # mmlu | ceval | cmmlu
    style: str  # letter | cloze
    source: str  # the folder
    lang: str  # en | zh
    test: dict[str, list[Question]] = field(default_factory=dict)
    dev: dict[str, list[Question]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return sum(len(q) for q in self.test.values())


@dataclass(frozen=True)
class Layout:
    name: str
    lang: str
    split: str  # the folder whose answers are scored
    suffix: str  # file name = SUBJECT + suffix
    dev_suffix: str
    header: bool
    columns: tuple[str, ...]  # question, A, B, C, D, answer in the header (when there is one)
    template: str  # the engine's task template for this layout (letter style), under lm_eval/tasks
    subject_yaml: str  # the engine's per-subject file, `{subject}` filled in
    description: str  # when the engine has no file for a subject


LAYOUTS = {
    "mmlu": Layout("mmlu", "en", "test", "_test.csv", "_dev.csv", False, (),
                   "mmlu/default/_default_template_yaml", "mmlu/default/mmlu_{subject}.yaml",
                   "The following are multiple choice questions (with answers) about {subject}.\n\n"),
    "ceval": Layout("ceval", "zh", "val", "_val.csv", "_dev.csv", True, ("question", "A", "B", "C", "D", "answer"),
                    "ceval/_default_ceval_yaml", "ceval/ceval-valid_{subject}.yaml",
                    "以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\n\n"),
    "cmmlu": Layout("cmmlu", "zh", "test", ".csv", ".csv", True, ("Question", "A", "B", "C", "D", "Answer"),
                    "cmmlu/_default_template_yaml", "cmmlu/cmmlu_{subject}.yaml",
                    "以下是关于{subject}的单项选择题，请直接给出正确答案的选项。\n\n"),
}
# the engine's continuation (cloze) form of MMLU, and the same in Chinese (the engine has none for C-Eval/CMMLU)
CLOZE = {
    "en": {"template": "mmlu/continuation/_continuation_template_yaml",
           "description": "The following are questions (with answers) about {subject}.\n\n"},
    "zh": {"doc_to_text": "问题：{{question.strip()}}\n答案：", "doc_to_choice": "{{choices}}",
           "doc_to_target": "{{answer}}", "target_delimiter": "", "output_type": "multiple_choice",
           "description": "以下是关于{subject}的问题（附答案）。\n\n", "metadata": {"version": 1.0}},
}
LAYOUT_HELP = ("MMLU: test/SUBJECT_test.csv (no header: question,A,B,C,D,answer); C-Eval: val/SUBJECT_val.csv "
               "(header id,question,A,B,C,D,answer,...); CMMLU: test/SUBJECT.csv (header ,Question,A,B,C,D,Answer); "
               "dev/ beside it is optional (few-shot examples)")


# ------------------------------------------------------------------------------------------------ reading


def _rows(path: Path) -> list[list[str]]:
    text = files.read_text(path, InputError, "benchmark CSV file", fallbacks=("gb18030",))
    try:
        return [row for row in csv.reader(io.StringIO(text, newline="")) if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        raise InputError(f"{path} is not CSV we can read: {exc}.", "save it again as UTF-8 CSV.") from None


def read_questions(path: Path, layout: Layout, subject: str) -> list[Question]:
    """Every question of one subject file; bad rows are listed together in one DataError."""
    rows = _rows(path)
    start = 0
    index = list(range(6))
    if layout.header:
        if not rows:
            return []
        header = [cell.strip().lstrip("\ufeff") for cell in rows[0]]
        missing = [c for c in layout.columns if c not in header]
        if missing:
            raise InputError(f"{path} has no column {', '.join(missing)} (its header: {', '.join(header)}).",
                             f"a {layout.name} file's header names {', '.join(layout.columns)}; {LAYOUT_HELP}.")
        index = [header.index(c) for c in layout.columns]
        start = 1
    questions, problems = [], []
    for number, row in enumerate(rows[start:], start=start + 1):
        if len(row) <= max(index):
            problems.append((number, f"has {len(row)} columns, expected at least {max(index) + 1}"))
            continue
        question, *choices, answer = (row[i].strip() for i in index)
        if answer.upper() not in LETTERS:
            problems.append((number, f"answer {answer!r} is not one of A, B, C, D"))
            continue
        questions.append(Question(question, tuple(choices), LETTERS.index(answer.upper()), subject))
    if problems:
        raise DataError(f"{path}: {len(problems)} bad row{'s' if len(problems) > 1 else ''} (listed above).",
                        "fix or delete the listed rows (line numbers count the CSV's lines) and run again.", problems)
    return questions


def _subject_files(folder: Path, suffix: str) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {p.name[: -len(suffix)]: p for p in sorted(folder.iterdir())
            if p.is_file() and p.name.endswith(suffix) and len(p.name) > len(suffix)}


def _has_header(path: Path) -> bool:
    rows = _rows(path)
    return bool(rows) and rows[0][-1].strip().upper() not in LETTERS  # a data row ends with its answer letter


def detect_layout(folder: Path) -> Layout:
    """The layout whose files `folder` holds (also accepted: the folder above them, named data/)."""
    val = _subject_files(folder / "val", "_val.csv")
    if val:
        return LAYOUTS["ceval"]
    mmlu = _subject_files(folder / "test", "_test.csv")
    if mmlu and not _has_header(next(iter(mmlu.values()))):
        return LAYOUTS["mmlu"]
    csvs = _subject_files(folder / "test", ".csv")
    if csvs and _has_header(next(iter(csvs.values()))):
        return LAYOUTS["cmmlu"]
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())[:8]
    raise InputError(f"{folder} is not a benchmark folder in MMLU, C-Eval or CMMLU layout (it holds: "
                     f"{', '.join(found) or 'nothing'}).", f"pass a folder laid out as one of them: {LAYOUT_HELP}.")


def read_folder(path: str | os.PathLike, *, name: str | None = None, style: str = "letter",
                subjects: list[str] | None = None) -> Benchmark:
    """A benchmark folder (MMLU, C-Eval or CMMLU layout) -> its questions, per subject."""
    folder = files.expand_path(path)
    if not folder.exists():
        raise InputError(f"The benchmark folder {folder} does not exist.",
                         f"check the path, or pass a task name (`python -m finetune eval --help` lists them); "
                         f"a folder is laid out as {LAYOUT_HELP}.")
    if not folder.is_dir():
        raise InputError(f"{folder} is a file, not a benchmark folder.", f"pass the folder: {LAYOUT_HELP}.")
    if not any((folder / d).is_dir() for d in ("test", "val")) and (folder / "data").is_dir():
        folder = folder / "data"
    layout = detect_layout(folder)
    tests = _subject_files(folder / layout.split, layout.suffix)
    devs = _subject_files(folder / "dev", layout.dev_suffix)
    if subjects:
        unknown = [s for s in subjects if s not in tests]
        if unknown:
            raise InputError(f"{folder} has no subject {', '.join(unknown)}.",
                             f"use some of: {', '.join(list(tests)[:20])}{' ...' if len(tests) > 20 else ''}.")
        tests = {s: tests[s] for s in subjects}
    bench = Benchmark(name or layout.name, layout.name, style, str(folder), layout.lang)
    for subject, file in tests.items():
        bench.test[subject] = read_questions(file, layout, subject)
        if subject in devs:
            bench.dev[subject] = read_questions(devs[subject], layout, subject)
    if not bench.size:
        raise InputError(f"{folder} holds no questions.", f"fill it: {LAYOUT_HELP}.")
    return bench


def sample_benchmarks(per_subject: int | None = None) -> list[Benchmark]:
    """The knowledge sample (finetune/data/knowledge/{en,zh}), scored cloze-style; `per_subject` keeps the first
    questions of each subject (the quick eval's 4 of 8)."""
    benches = [read_folder(SAMPLE_DIR / "en", name="sample-en", style="cloze"),
               read_folder(SAMPLE_DIR / "zh", name="sample-zh", style="cloze")]
    if per_subject:
        for bench in benches:
            bench.test = {subject: questions[:per_subject] for subject, questions in bench.test.items()}
    return benches


# ------------------------------------------------------------------------------------------------ engine tasks


def _engine():
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError as exc:
        raise EnvironmentProblem(f"lm-evaluation-harness does not import: {exc}.",
                                 "pip install --no-deps -r requirements.txt (it pins lm-eval and what it imports).") \
            from exc
    return lm_eval, TaskManager


def engine_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("lm_eval")
    except metadata.PackageNotFoundError:
        return "not installed"


def _engine_yaml(relative: str) -> dict[str, Any] | None:
    """One of the engine's own task files (plain YAML for these three benchmarks), None when it has none."""
    import yaml

    lm_eval, _ = _engine()
    path = Path(lm_eval.__file__).parent / "tasks" / relative
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else None


def _engine_rows(bench: Benchmark, questions: list[Question]) -> list[dict]:
    """Questions in the field names the engine's task for this layout reads."""
    if bench.style == "cloze" or bench.layout == "mmlu":
        return [{"question": q.question, "subject": q.subject, "choices": list(q.choices), "answer": q.answer}
                for q in questions]
    if bench.layout == "ceval":
        return [{"id": i, "question": q.question, **dict(zip(LETTERS, q.choices, strict=True)),
                 "answer": LETTERS[q.answer], "explanation": ""} for i, q in enumerate(questions)]
    return [{"Question": q.question, **dict(zip(LETTERS, q.choices, strict=True)), "Answer": LETTERS[q.answer]}
            for q in questions]


def _dataset(test: list[dict], dev: list[dict]) -> Callable[..., Any]:
    def load(**_ignored: Any) -> Any:
        import datasets

        splits = {"test": datasets.Dataset.from_list(test)}
        if dev:
            splits["dev"] = datasets.Dataset.from_list(dev)
        return datasets.DatasetDict(splits)

    return load


def task_configs(bench: Benchmark) -> list[dict[str, Any]]:
    """One engine task config per subject: the engine's own prompt for the layout and subject, our questions."""
    layout = LAYOUTS[bench.layout]
    if bench.style == "cloze" and bench.lang == "zh":
        base, subject_yaml, description = dict(CLOZE["zh"]), None, CLOZE["zh"]["description"]
    elif bench.style == "cloze":
        base = _engine_yaml(CLOZE["en"]["template"]) or {}
        subject_yaml, description = "mmlu/continuation/mmlu_{subject}.yaml", CLOZE["en"]["description"]
    else:
        base, subject_yaml, description = _engine_yaml(layout.template) or {}, layout.subject_yaml, layout.description
    configs = []
    for subject, questions in bench.test.items():
        cfg = dict(base)
        own = _engine_yaml(subject_yaml.format(subject=subject)) if subject_yaml else None
        if own:
            cfg.update({k: v for k, v in own.items() if k in ("description", "task_alias")})
        else:
            shown = SAMPLE_SUBJECTS_ZH.get(subject, subject) if bench.lang == "zh" else subject.replace("_", " ")
            cfg["description"] = description.format(subject=shown)
        dev = bench.dev.get(subject, [])
        rows = _dataset(_engine_rows(bench, questions), _engine_rows(bench, dev))
        cfg.update(task=f"{bench.name}::{subject}", task_alias=subject, dataset_path=None, dataset_name=None,
                   dataset_kwargs=None, custom_dataset=rows, test_split="test", validation_split=None,
                   fewshot_split="dev" if dev else None)
        cfg.pop("include", None)
        cfg.pop("tag", None)
        if not dev:
            cfg.pop("fewshot_config", None)
        configs.append(cfg)
    return configs


@dataclass
class Plan:
    """What `score` runs: our benchmarks (read from folders) and the engine's own tasks (by name)."""

    benchmarks: list[Benchmark] = field(default_factory=list)
    engine_tasks: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.benchmarks] + self.engine_tasks

    def __bool__(self) -> bool:
        return bool(self.benchmarks or self.engine_tasks)


def engine_task_name(spec: str) -> str:
    """A hub dataset id of a known benchmark -> the engine's task for it; anything else stays as it is."""
    return HUB_IDS.get(spec.strip().lower(), spec.strip())


@functools.cache
def engine_tasks() -> Any:
    """The engine's TaskManager over all its own tasks (indexing ~15,000 task files takes a few seconds: once)."""
    _, TaskManager = _engine()
    with quiet_engine():
        return TaskManager()


def check_engine_tasks(names: list[str], known_names: str) -> Any:
    """Each name must be one of the engine's tasks or groups; returns the engine's TaskManager."""
    manager = engine_tasks()
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        raise InputError(f"Unknown task {', '.join(repr(n) for n in unknown)}: not a folder, not one of ours and not "
                         "an lm-evaluation-harness task.",
                         f"use {known_names}, a benchmark folder, or an lm-evaluation-harness task name "
                         "(`python -m lm_eval ls tasks` lists them).")
    return manager


def load_engine_tasks(manager: Any, names: list[str]) -> None:
    """Build the engine's tasks once before any model is loaded: this downloads their data, and says so in one line
    when there is no network."""
    for name in names:
        try:
            with quiet_engine():
                manager.load([name])
        except ImportError as exc:
            raise EnvironmentProblem(f"The lm-evaluation-harness task '{name}' needs a package that is not installed: "
                                     f"{exc}.", f"install it (pip install {exc.name or 'PACKAGE'}) and run again.") \
                from None
        except Exception as exc:  # datasets raises several types (offline mode, connection, not found)
            hub = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("HF_DATASETS_OFFLINE")
            reason = "the machine is offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set)" if hub else \
                f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            raise InputError(f"Cannot load the data of the lm-evaluation-harness task '{name}' from the hub: "
                             f"{reason}.", "connect to the network once (HF_ENDPOINT may name a mirror), or download "
                             "the benchmark and pass its folder (MMLU, C-Eval or CMMLU layout).") from None


# ------------------------------------------------------------------------------------------------ scoring


@contextlib.contextmanager
def quiet_engine() -> Iterator[None]:
    """lm-evaluation-harness's INFO/WARNING lines (about passing a loaded model, custom datasets, seeds ...) and its
    bar per subject while it builds the prompts (57 for MMLU) are hidden unless FINETUNE_VERBOSE is set; the bar
    over the log-likelihood requests stays."""
    import lm_eval.api.task as engine_task

    from app.quiet import is_verbose

    logger = logging.getLogger("lm_eval")
    level, bar = logger.level, getattr(engine_task, "tqdm", None)
    if not is_verbose(False, "FINETUNE_VERBOSE"):
        logger.setLevel(logging.ERROR)
        if bar is not None:
            engine_task.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        logger.setLevel(level)
        if bar is not None:
            engine_task.tqdm = bar


def _leaves(results: dict, name: str) -> list[str]:
    subtasks = results.get("group_subtasks", {})
    if name not in subtasks:
        return [name]
    return [leaf for child in subtasks[name] for leaf in _leaves(results, child)]


def _count(results: dict, task: str) -> int:
    samples = results.get("n-samples", {}).get(task, {})
    return int(samples.get("effective", samples.get("original", 0)) or 0)


def _metric(values: dict, metric: str) -> float | None:
    value = values.get(f"{metric},none")
    return float(value) if isinstance(value, int | float) else None


def score(model: Any, tokenizer: Any, plan: Plan, *, fewshot: int | None = None, limit: int | None = None,
          batch_size: int | str | None = None, manager: Any = None, progress: Progress | None = None) -> dict:
    """Accuracy on each benchmark of `plan` for one loaded model: {name: {acc, acc_norm, n, style, source,
    subjects}}. The engine scores every option by log-likelihood; subjects are added up weighted by size."""
    if not plan:
        return {}
    lm_eval, TaskManager = _engine()
    from lm_eval.models.huggingface import HFLM

    progress = progress or say
    configs = [cfg for bench in plan.benchmarks for cfg in task_configs(bench)]
    if batch_size is None:
        batch_size = "auto" if str(getattr(model, "device", "cpu")).startswith("cuda") else 16
    questions = sum(b.size for b in plan.benchmarks)
    progress(f"  knowledge: {', '.join(plan.names)}"
             + (f" ({questions} questions, the log-likelihood of every option)" if questions else ""))
    with quiet_engine():
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_batch_size=64)
        results = lm_eval.simple_evaluate(
            lm, tasks=configs + list(plan.engine_tasks), num_fewshot=fewshot, limit=limit, bootstrap_iters=0,
            log_samples=False, task_manager=manager if plan.engine_tasks else TaskManager(include_defaults=False))
    out: dict[str, dict] = {}
    for bench in plan.benchmarks:
        subjects = {}
        for subject in bench.test:
            values = results["results"].get(f"{bench.name}::{subject}", {})
            subjects[subject] = {"acc": _metric(values, "acc"), "acc_norm": _metric(values, "acc_norm"),
                                 "n": _count(results, f"{bench.name}::{subject}")}
        out[bench.name] = _weighted(subjects) | {"style": bench.style, "layout": bench.layout,
                                                 "source": bench.source, "subjects": subjects}
    for name in plan.engine_tasks:
        values = results["results"].get(name, {})
        leaves = _leaves(results, name)
        subjects = {leaf: {"acc": _metric(results["results"].get(leaf, {}), "acc"),
                           "acc_norm": _metric(results["results"].get(leaf, {}), "acc_norm"),
                           "n": _count(results, leaf)} for leaf in leaves}
        total = _weighted(subjects)
        acc = _metric(values, "acc")
        out[name] = total | {"acc": acc if acc is not None else total["acc"], "style": "engine task",
                             "layout": "lm-evaluation-harness", "source": name, "subjects": subjects}
    return out


def _weighted(subjects: dict[str, dict]) -> dict:
    """acc and acc_norm over all subjects, each weighted by its number of questions (the engine's weight_by_size)."""
    total = sum(s["n"] for s in subjects.values())
    out: dict[str, Any] = {"n": total}
    for metric in ("acc", "acc_norm"):
        pairs = [(s[metric], s["n"]) for s in subjects.values() if s[metric] is not None]
        out[metric] = sum(v * n for v, n in pairs) / sum(n for _, n in pairs) if pairs and total else None
    return out
