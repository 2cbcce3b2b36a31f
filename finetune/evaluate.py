"""`finetune eval`: did it work, and what did it cost? The fine-tuned model (and its base) side by side.

- identity: share of held-out identity questions (zh/en, never in the training data) answered with the name;
- leaks: share of held-out everyday questions answered with the name (it should stay near 0);
- style: the everyday answers compared with the base's (similarity) and with each other (diversity), so a model
  that collapsed into one stock answer shows;
- knowledge: multiple-choice accuracy scored by lm-evaluation-harness (finetune/knowledge.py).

Identity, leaks and style are greedy answers (64 new tokens) through the evaluated model's chat template; the base
answers the same prompt text (the fine-tuned tokenizer's template), as the run's before/after samples do. Results:
eval.json, a table on the terminal and a bar chart (eval.png); `publish` puts them on the model card.
"""

from __future__ import annotations

import difflib
import gc
import itertools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.console import say
from app.files import expand_path
from app.formats import ADAPTER_WEIGHTS, is_run_dir, read_meta, read_run_manifest, run_spec

from . import evalreport
from .data.heldout import (
    HELDOUT_GENERAL_EN,
    HELDOUT_GENERAL_ZH,
    HELDOUT_IDENTITY_EN,
    HELDOUT_IDENTITY_ZH,
    carries_name,
)
from .errors import InputError
from .fsutil import write_json

OUR_TASKS = ("quick", "identity", "leaks", "style", "sample")
# the quick version (`finetune run`'s eval stage, and the default here): identity, leaks and style, the knowledge
# sample's first QUICK_PER_SUBJECT questions of each subject, and no identity questions for the base (its answers to
# the everyday questions give its leaks and style): about 2 minutes on 2 CPU cores for the embedded model
QUICK = ["quick"]
QUICK_PER_SUBJECT = 4
GENERATION_TASKS = ("identity", "leaks", "style")
MAX_NEW_TOKENS = 64
GENERATION_BATCH = 30  # on CPU a batch of 30 answers in ~20 % less time than 16 (fewer, larger decoding steps)


@dataclass
class EvalOptions:
    target: str  # a run directory, a model folder, a preset or a downloaded hub id
    base: str | bool = False  # True: the run's (or merged model's) base; a string: that model; False: none
    tasks: list[str] | None = None  # None: QUICK
    names: list[str] = field(default_factory=list)  # the assistant's name(s); a run's are read from run.json
    out: str | None = None  # folder for eval.json + eval.png (a run: the run directory)
    scoring: str = "letter"  # how benchmark folders are scored: letter (the benchmarks' own way) or cloze
    fewshot: int | None = None
    limit: int | None = None
    batch_size: int | None = None
    bits: int | None = None
    max_new_tokens: int = MAX_NEW_TOKENS
    progress: Any = None


@dataclass
class Target:
    model: Path  # the model to evaluate
    base: Path | None
    run_dir: Path | None
    names: list[str]
    out: Path
    weights_sha256: str | None  # the run's adapter weights (what the card checks the report against)


# --------------------------------------------------------------------------------------------- tasks


@dataclass
class Tasks:
    generation: list[str]  # identity / leaks / style, in that order
    plan: Any  # knowledge.Plan
    manager: Any = None  # the engine's TaskManager when engine tasks were named
    base_identity: bool = True  # the quick version skips the base's identity questions

    @property
    def names(self) -> list[str]:
        return self.generation + self.plan.names


def resolve_tasks(specs: list[str] | None, *, scoring: str = "letter") -> Tasks:
    """`--tasks` -> our generation metrics + the knowledge plan; unknown names, missing folders and benchmark ids we
    cannot use are one-line errors before any model is loaded."""
    from . import knowledge

    if scoring not in knowledge.STYLES:
        raise InputError(f"Unknown scoring '{scoring}'.", f"use one of: {', '.join(knowledge.STYLES)}.")
    wanted = list(dict.fromkeys(s.strip() for s in (specs or QUICK) if s.strip()))
    if not wanted:
        raise InputError("No task given.", f"name some: {', '.join(OUR_TASKS)}, a benchmark folder or an "
                         "lm-evaluation-harness task.")
    generation = [t for t in GENERATION_TASKS if t in wanted or "quick" in wanted]
    plan = knowledge.Plan()
    engine: list[str] = []
    taken: set[str] = set()
    for spec in sorted(wanted, key=lambda s: s != "sample"):  # the whole sample wins over the quick one
        if spec in GENERATION_TASKS:
            continue
        if spec in ("sample", "quick"):
            for bench in knowledge.sample_benchmarks(None if spec == "sample" else QUICK_PER_SUBJECT):
                if bench.name not in taken:
                    plan.benchmarks.append(bench)
                    taken.add(bench.name)
            continue
        path = expand_path(spec)
        if path.exists() or _looks_like_path(spec):
            bench = knowledge.read_folder(path, style=scoring)
            if bench.name in taken:
                bench.name = f"{bench.name}-{path.name}"
            plan.benchmarks.append(bench)
            taken.add(bench.name)
            continue
        name = knowledge.engine_task_name(spec)
        if "/" in name:
            raise InputError(f"'{spec}' is neither a folder nor a benchmark dataset id we know.",
                             f"use one of {', '.join(knowledge.HUB_IDS)} (the engine's own task downloads it), or "
                             "download the dataset and pass its folder (MMLU, C-Eval or CMMLU layout).")
        engine.append(name)
    tasks = Tasks(generation, plan, base_identity="quick" not in wanted or "identity" in wanted)
    if engine:
        known = f"{', '.join(OUR_TASKS)}"
        tasks.manager = knowledge.check_engine_tasks(engine, known)
        knowledge.load_engine_tasks(tasks.manager, engine)
        plan.engine_tasks = [n for n in engine if n not in taken]
    return tasks


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", ".", "~")) or "\\" in spec or spec.count("/") > 1 or spec.endswith("/")


# --------------------------------------------------------------------------------------------- target


def resolve_target(options: EvalOptions) -> Target:
    """What to evaluate: a run's merged model with its base and names, or a model folder (with --base MODEL)."""
    from .modelload import model_folder, resolve_model

    path = expand_path(options.target)
    run_dir = None
    if path.is_dir() and (is_run_dir(path) or (path / "merged").is_dir()):
        run_dir = path.resolve()
    model = model_folder(run_dir) if run_dir else resolve_model(options.target, progress=say)
    names = [n for n in options.names if n]
    base: Path | None = None
    weights = None
    if run_dir is not None:
        manifest = read_run_manifest(run_dir, InputError)
        names = names or [n for n in manifest.get("names", []) if isinstance(n, str) and n]
        recorded = run_spec(manifest).get("model_path")
        if options.base is True:
            if not recorded:
                raise InputError(f"{run_dir}/run.json does not say which base model the run was trained from.",
                                 "pass it: --base MODEL_FOLDER.")
            base = resolve_model(str(recorded), progress=say)
        adapter = run_dir / "adapter" / ADAPTER_WEIGHTS
        if adapter.is_file():
            from .fsutil import sha256_file

            weights = sha256_file(adapter)
    elif options.base is True:
        meta = read_meta(model, InputError)
        recorded = meta.get("base_model") or meta.get("model_path")
        if not recorded:
            raise InputError(f"{model} does not say which base model it was made from (no finetune_meta.json).",
                             "name the base: --base MODEL (a folder, preset or downloaded hub id).")
        base = resolve_model(str(recorded), progress=say)
    if isinstance(options.base, str) and options.base:
        base = resolve_model(options.base, progress=say)
    out = expand_path(options.out) if options.out else (run_dir or Path("eval") / model.name)
    return Target(model, base, run_dir, names, out, weights)


# --------------------------------------------------------------------------------------------- measures


def similarity(a: str, b: str) -> float:
    """The stated style measure (evalreport.STYLE_MEASURE): difflib's ratio of the two texts' characters."""
    if not a and not b:
        return 1.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def diversity(answers: list[str]) -> float | None:
    """1 - the mean similarity of every pair of answers to different prompts: one stock answer for all is 0."""
    pairs = list(itertools.combinations(answers, 2))
    if not pairs:
        return None
    return 1 - sum(similarity(a, b) for a, b in pairs) / len(pairs)


def _rate(answers: dict[str, list[str]], prompts: dict[str, list[str]], names: list[str]) -> dict:
    by_lang, examples, hits, total = {}, [], 0, 0
    for lang in ("zh", "en"):
        found = [carries_name(a, names) for a in answers[lang]]
        by_lang[lang] = {"with_name": sum(found), "n": len(found)}
        hits += sum(found)
        total += len(found)
        examples += [{"q": q, "a": a, "with_name": f} for q, a, f in zip(prompts[lang], answers[lang], found,
                                                                      strict=True)]
    return {"rate": hits / total if total else None, "with_name": hits, "n": total, "by_lang": by_lang,
            "answers": examples}


IDENTITY = {"zh": HELDOUT_IDENTITY_ZH, "en": HELDOUT_IDENTITY_EN}
GENERAL = {"zh": HELDOUT_GENERAL_ZH, "en": HELDOUT_GENERAL_EN}


def ask_pools(model: Any, tokenizer: Any, pools: dict[str, dict[str, list[str]]], *, chat_template: str | None,
              max_new_tokens: int, batch_size: int, label: str) -> dict[str, dict[str, list[str]]]:
    """Greedy answers to each pool ({pool: {lang: prompts}}), with a progress line per batch."""
    from .generation import answer_batch

    flat = [(pool, lang, p) for pool, langs in pools.items() for lang, prompts in langs.items() for p in prompts]
    started = time.monotonic()

    def report(done: int, total: int) -> None:
        say(f"  {label}: {done}/{total} questions answered ({time.monotonic() - started:.0f} s)")

    answers = answer_batch(model, tokenizer, [[{"role": "user", "content": p}] for _, _, p in flat],
                           max_new_tokens=max_new_tokens, batch_size=batch_size, chat_template=chat_template,
                           progress=report)
    out: dict[str, dict[str, list[str]]] = {pool: {lang: [] for lang in langs} for pool, langs in pools.items()}
    for (pool, lang, _), (text, _finished) in zip(flat, answers, strict=True):
        out[pool][lang].append(text)
    return out


def evaluate_model(model: Any, tokenizer: Any, tasks: Tasks, *, names: list[str], chat_template: str | None = None,
                   options: EvalOptions | None = None, label: str = "model", identity: bool = True) -> dict:
    """Every requested measure for one loaded model: {identity, leaks, style, knowledge}; the style's similarity to
    the base is added by `compare`, which has both. `identity=False` skips the identity questions."""
    from . import knowledge

    options = options or EvalOptions(target="")
    result: dict[str, Any] = {}
    pools: dict[str, dict[str, list[str]]] = {}
    if "identity" in tasks.generation and identity:
        pools["identity"] = IDENTITY
    if {"leaks", "style"} & set(tasks.generation):
        pools["general"] = GENERAL
    batch = options.batch_size or GENERATION_BATCH
    if pools:
        answers = ask_pools(model, tokenizer, pools, chat_template=chat_template,
                            max_new_tokens=options.max_new_tokens, batch_size=batch, label=label)
        if "identity" in pools:
            result["identity"] = _rate(answers["identity"], IDENTITY, names)
        if "leaks" in tasks.generation:
            result["leaks"] = _rate(answers["general"], GENERAL, names)
        if "style" in tasks.generation:
            general = answers["general"]["zh"] + answers["general"]["en"]
            result["style"] = {"diversity": diversity(general), "answers": general}
    if tasks.plan:
        say(f"[eval] {label}: knowledge (lm-evaluation-harness {knowledge.engine_version()})")
        result["knowledge"] = knowledge.score(model, tokenizer, tasks.plan, fewshot=options.fewshot,
                                              limit=options.limit, batch_size=options.batch_size,
                                              manager=tasks.manager, progress=say)
    return result


def compare(tuned: dict, base: dict) -> None:
    """Per prompt, how like the base's answer the tuned model's everyday answer is (added to tuned['style'])."""
    if "style" in tuned and "style" in base:
        pairs = list(zip(tuned["style"]["answers"], base["style"]["answers"], strict=True))
        scores = [similarity(t, b) for t, b in pairs]
        tuned["style"]["similarity_to_base"] = sum(scores) / len(scores) if scores else None
        tuned["style"]["per_prompt"] = [round(s, 3) for s in scores]


# --------------------------------------------------------------------------------------------- driver


def _require_chat_template(tokenizer: Any, model_dir: Path) -> str:
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        raise InputError(f"{model_dir} has no chat template (tokenizer_config.json has no 'chat_template'), so it "
                         "cannot be asked the identity and everyday questions the way a chat asks them.",
                         "evaluate a chat/instruct model or a run (its merged tokenizer carries the training "
                         "template), or only its knowledge: --tasks sample.")
    return template


def _release(model: Any) -> None:
    del model
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass


def run_eval(options: EvalOptions) -> dict:
    """Evaluate the target (and its base), write eval.json + eval.png, return the report."""
    from . import knowledge
    from .modelload import load_model, load_tokenizer

    started = time.monotonic()
    tasks = resolve_tasks(options.tasks, scoring=options.scoring)
    target = resolve_target(options)
    if {"identity", "leaks"} & set(tasks.generation) and not target.names:
        if options.tasks:
            raise InputError("identity and leaks need the assistant's name, and none is known for "
                             f"{options.target}.", "pass it: --name 小薇 [--name-en Xiaowei].")
        say("[eval] no assistant name known (--name): identity and leaks are skipped")
        tasks.generation = [t for t in tasks.generation if t not in ("identity", "leaks")]
    template = None
    if tasks.generation:  # before loading the weights: a model without a chat template fails in a second
        template = _require_chat_template(load_tokenizer(target.model), target.model)
    say(f"[eval] {', '.join(tasks.names)} on {target.model}" + (f" and its base {target.base}" if target.base
                                                                  else ""))
    models: dict[str, dict] = {}
    for label, folder in (("tuned", target.model), ("base", target.base)):
        if folder is None:
            continue
        say(f"[eval] {label}: loading {folder}")
        model, tokenizer = load_model(folder, bits=options.bits)
        models[label] = evaluate_model(model, tokenizer, tasks, names=target.names, options=options, label=label,
                                       chat_template=template, identity=label == "tuned" or tasks.base_identity)
        _release(model)
    if "base" in models:
        compare(models["tuned"], models["base"])
    report = {
        "format": evalreport.FORMAT,
        "model": str(target.model),
        "base": str(target.base) if target.base else None,
        "run_dir": str(target.run_dir) if target.run_dir else None,
        "adapter_sha256": target.weights_sha256,
        "names": target.names,
        "tasks": tasks.names,
        "engine": {"lm_eval": knowledge.engine_version()} if tasks.plan else {},
        "settings": {"max_new_tokens": options.max_new_tokens, "greedy": True, "fewshot": options.fewshot or 0,
                     "base_identity": tasks.base_identity if target.base else None,
                     "limit": options.limit, "benchmark_scoring": options.scoring,
                     "style_measure": evalreport.STYLE_MEASURE},
        "goals": evalreport.GOALS,
        "models": models,
        "seconds": round(time.monotonic() - started, 1),
    }
    report["goals_met"] = evalreport.goals_met(report)
    target.out.mkdir(parents=True, exist_ok=True)
    write_json(target.out / evalreport.EVAL_FILE, report)
    evalreport.plot(report, target.out / evalreport.CHART_FILE)
    report["written"] = {"eval": str(target.out / evalreport.EVAL_FILE),
                         "chart": str(target.out / evalreport.CHART_FILE)}
    return report


def print_report(report: dict, stream=None) -> None:
    stream = stream or sys.stdout
    print(evalreport.table(report), file=stream)
    written = report.get("written", {})
    if written:
        print(f"\nReport: {written.get('eval')}\nChart:  {written.get('chart')}", file=stream)


def register(subparsers, formatter_class) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="did it work, and what did it cost: identity, leaks, kept style and knowledge, before vs after",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        epilog="tasks (--tasks, default: quick):\n"
        "  quick                    identity, leaks, style and 4 questions a subject of the knowledge sample; the "
        "base answers\n"
        "                           only the everyday questions (~2 min on 2 CPU cores for the embedded model)\n"
        "  identity, leaks, style   our own measures on held-out questions (need the name: a run knows it, else "
        "--name)\n"
        "  sample                   the whole knowledge sample shipped here (64 hand-written zh + en questions)\n"
        "  DIR                      a benchmark folder in MMLU, C-Eval or CMMLU layout (scored by the option letter;"
        " --scoring cloze\n"
        "                           scores the option text, better for models under ~1B)\n"
        "  mmlu, cmmlu, ceval-valid, cais/mmlu, ceval/ceval-exam, haonan-li/cmmlu, any lm-evaluation-harness task\n"
        "                           the engine's own task; its data comes from the hub (network needed once)\n\n"
        "examples:\n"
        "  python -m finetune eval runs/xiaowei --base                       # quick: fine-tuned and base side by "
        "side\n"
        "  python -m finetune eval runs/xiaowei --base --tasks identity leaks ~/data/ceval-exam ~/data/cmmlu\n"
        "  python -m finetune eval runs/xiaowei-7b --base --tasks mmlu cmmlu ceval-valid --fewshot 5   # online, GPU\n"
        "  python -m finetune eval Qwen/Qwen2.5-7B-Instruct --tasks ~/data/mmlu --limit 20\n\n"
        "Writes eval.json and eval.png into the run directory (else ./eval/MODEL, or --out); `python -m publish` "
        "puts the table on the model card.",
        formatter_class=formatter_class,
    )
    parser.add_argument("target", metavar="RUN_OR_MODEL", help="a run directory, a model folder, a preset or a "
                        "downloaded hub id")
    parser.add_argument("--base", nargs="?", const=True, default=False, metavar="MODEL",
                        help="also evaluate the base model, side by side: the run's (or merged model's) own, or MODEL")
    parser.add_argument("--tasks", nargs="+", default=None, metavar="TASK", help="what to measure (see below)")
    parser.add_argument("--name", default=None, help="the assistant's name (a run's is read from run.json)")
    parser.add_argument("--name-en", dest="name_en", default=None, help="its name in English answers")
    parser.add_argument("--scoring", choices=("letter", "cloze"), default="letter",
                        help="how benchmark folders are scored: the option letter (the benchmarks' own way) or the "
                        "option text")
    parser.add_argument("--fewshot", type=int, default=None, help="few-shot examples from each subject's dev/ "
                        "(default: the engine's, 0)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many questions per subject")
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=None,
                        help="answers generated at once (default 30) and options scored at once (default 16 on "
                        "CPU, the engine's automatic choice on a GPU)")
    parser.add_argument("--bits", type=int, choices=(4, 8), default=None, help="load in 4/8-bit (CUDA only)")
    parser.add_argument("--out", default=None, help="folder for eval.json and eval.png (default: the run directory)")
    parser.set_defaults(func=handle)


def handle(args) -> int:
    options = EvalOptions(target=args.target, base=args.base, tasks=args.tasks,
                          names=[n for n in (args.name, args.name_en) if n], out=args.out, scoring=args.scoring,
                          fewshot=args.fewshot, limit=args.limit, batch_size=args.batch_size, bits=args.bits)
    print_report(run_eval(options))
    return 0
