"""`finetune run`: data -> config -> train -> convert -> merge -> before/after samples -> quick eval, resumably.

Each stage records its key and outputs in RUN/run.json; a rerun skips finished stages and an interrupted
training resumes from its newest checkpoint.
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from app.console import say
from app.formats import ADAPTER_WEIGHTS

from .config import ConfigSpec, add_config_arguments, check_device_choices, write_config
from .errors import InputError
from .fsutil import write_json, write_jsonl
from .manifest import Manifest, stable_hash
from .presets import DEFAULT_PRESET, get_preset
from .runner import Launch

# eval: the quick `finetune eval` (identity, leaks, style, knowledge sample; base and fine-tuned), unless --no-eval;
# export only with --export (after eval: a later --export then skips the finished eval)
STAGES = ("data", "config", "train", "convert", "merge", "samples", "eval", "export")
SAMPLE_PROMPTS = ["请介绍一下你自己", "Who are you?", "What is the capital of France?"]

# The CPU recipe for the embedded 135M model: varied identity data mixed 1:1 with the base model's own
# answers (replay), so it learns the name without answering everything with it (docs/benchmarks.md).
EMBEDDED_RECIPE = dict(epochs=3, lr=1e-3, batch_size=8, grad_accum=1, max_length=256, pack=False,
                       lora_r=16, lora_alpha=32, evaluation_freq=0, eval_max_new_tokens=32, save_steps=10000,
                       save_total_limit=1)
EMBEDDED_IDENTITY_COUNT = 120
REPLAY_MAX_NEW_TOKENS = 96  # shorter replay answers (64) trained faster but let more general answers leak


@dataclass
class RunOptions:
    out: str
    name: str | None = None
    name_en: str | None = None
    author: str | None = None
    author_en: str | None = None
    lang: str = "both"
    count: int | None = None
    data: list[str] = field(default_factory=list)
    mix: str | None = None
    mix_ratio: float = 0.5
    replay: bool = True
    preset: str | None = None
    model: str | None = None
    config: dict = field(default_factory=dict)  # ConfigSpec overrides
    deepspeed: str = "none"
    launch: Launch | None = None
    sample_prompts: list[str] = field(default_factory=lambda: list(SAMPLE_PROMPTS))
    verbose: bool = False
    export: list[str] = field(default_factory=list)  # GGUF quantizations for the last stage (none: no export)
    evaluate: bool = True  # the quick eval stage (--no-eval skips it)


@dataclass
class RunResult:
    run_dir: Path
    merged: Path
    adapter: Path
    samples: list[dict]
    skipped: list[str]
    exported: dict = field(default_factory=dict)  # quant -> GGUF path, "modelfile" -> its path
    evaluation: dict | None = None  # eval.json's content (None: --no-eval and none before)


def slug(text: str) -> str:
    cleaned = re.sub(r"[^\w\-]+", "-", text, flags=re.UNICODE).strip("-").lower()
    return cleaned or "run"


class Runner:
    def __init__(self, options: RunOptions):
        self.o = options
        self.run_dir = Path(options.out).resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.manifest = Manifest(self.run_dir)
        self.skipped: list[str] = []
        from .modelload import resolve_model

        self.preset = get_preset(options.preset or DEFAULT_PRESET)
        self.model_dir = resolve_model(options.model or self.preset.name, progress=say)
        self.embedded = self.preset.embedded and options.model is None
        if options.export:  # before hours of training, not after
            from .export import check_quants
            from .llamacpp import require_tools

            options.export = check_quants(options.export)
            require_tools()

    def stage(self, name: str, key_inputs: object, action) -> dict:
        key = stable_hash(key_inputs)
        if self.manifest.is_done(name, key):
            self.skipped.append(name)
            say(f"[{name}] done before, skipping")
            return self.manifest.outputs(name)
        say(f"[{name}] ...")
        started = time.time()
        self.manifest.start(name, key)
        outputs = action()
        self.manifest.finish(name, key, outputs, time.time() - started)
        say(f"[{name}] finished in {time.time() - started:.0f}s")
        return outputs

    # ---------------------------------------------------------------- stages
    def build_data(self) -> dict:
        from .data.formats import load_jsonl
        from .data.identity import build_identity, mix_records
        from .data.replay import ensure_replay

        o = self.o
        records: list[dict] = []
        for path in o.data:
            records += load_jsonl(path)
        identity_count = 0
        if o.name:
            count = o.count or (EMBEDDED_IDENTITY_COUNT if self.embedded else 200)
            identity = build_identity(o.name, name_en=o.name_en, author=o.author, author_en=o.author_en,
                                      lang=o.lang, count=count, seed=self.seed, system=self.system)
            identity_count = len(identity)
            general: list[dict] = []
            if o.mix:
                from .data.convert import convert_file

                general = convert_file(o.mix)
            elif o.replay:
                from .embedded import cache_dir

                cache = cache_dir() / "replay" / f"{slug(self.model_dir.name)}-{o.lang}.jsonl"
                general = ensure_replay(self.model_dir, cache, lang=o.lang, system=self.system, batch_size=40,
                                        max_new_tokens=REPLAY_MAX_NEW_TOKENS, progress=say)
            records += mix_records(identity, general, o.mix_ratio, self.seed, self.system) if general else identity
        if not records:
            raise InputError("Nothing to train on.", "pass --name NAME (identity data) and/or --data FILE.")
        out = self.run_dir / "data" / "train.jsonl"
        write_jsonl(out, records)
        digest = self.manifest.record_input("train_data", out)
        say(f"  {len(records)} training records ({identity_count} identity) -> {out}")
        return {"train_data": str(out), "records": len(records), "identity": identity_count, "sha256": digest}

    def build_config(self, data_path: str) -> dict:
        spec = self.spec(data_path)
        out = self.run_dir / "config.py"
        _, plan = write_config(spec, out, command=self.command())
        self.manifest.record_spec(asdict(spec), check_device_choices(spec))
        self.manifest.data["speed"] = plan.summary()
        return {"config": str(out), "num_samples": spec.num_samples}

    def spec(self, data_path: str) -> ConfigSpec:
        values = dict(EMBEDDED_RECIPE) if self.embedded else {}
        if not self.embedded:
            values.update(lora_r=self.preset.lora_r, lora_alpha=self.preset.lora_alpha, quant=self.preset.quant)
        values.update({k: v for k, v in self.o.config.items() if v is not None})
        values.update(model_path=str(self.model_dir), data_files=[data_path], preset=self.preset.name,
                      system=self.system, seed=self.seed)
        if self.o.launch is not None:
            values["world_size"] = self.o.launch.gpus * self.o.launch.nnodes
        if self.o.deepspeed != "none":
            values["deepspeed"] = self.o.deepspeed
        return ConfigSpec(**values)

    def run_training(self, config: str, key_changed: bool) -> dict:
        from .train import train

        work_dir = self.run_dir / "work_dir"
        if key_changed and work_dir.exists():
            say(f"  the config changed since the last training: clearing {work_dir}")
            shutil.rmtree(work_dir)
        result = train(config, work_dir, resume=work_dir.exists(), deepspeed=self.o.deepspeed,
                       launch=self.o.launch, verbose=self.o.verbose)
        if result.loss_curve:
            shutil.copy2(result.loss_curve, self.run_dir / "loss.png")
        return {"work_dir": str(work_dir), "checkpoint": str(result.checkpoint), "final_loss": result.final_loss,
                "iterations": len(result.history), "loss_curve": str(self.run_dir / "loss.png")}

    def make_samples(self, merged: str) -> dict:
        from .generation import answer_batch, load_for_generation

        prompts = self.o.sample_prompts
        conversations = [[{"role": "user", "content": p}] for p in prompts]
        after_model, tokenizer = load_for_generation(merged)
        after = answer_batch(after_model, tokenizer, conversations, max_new_tokens=48)
        del after_model
        before_model, _ = load_for_generation(self.model_dir)
        # the same prompt text for both: the training template and system prompt
        before = answer_batch(before_model, tokenizer, conversations, max_new_tokens=48)
        samples = [{"prompt": p, "before": b[0], "after": a[0]} for p, b, a in zip(prompts, before, after, strict=True)]
        write_json(self.run_dir / "samples.json", samples)
        return {"samples": str(self.run_dir / "samples.json")}

    # ---------------------------------------------------------------- driver
    @property
    def seed(self) -> int:
        return int(self.o.config.get("seed") or 42)

    @property
    def system(self) -> str:
        from .config import DEFAULT_SYSTEM

        return self.o.config.get("system") or DEFAULT_SYSTEM

    def command(self) -> str:
        return "python -m finetune " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "finetune.run.run(...)"

    def run(self) -> RunResult:
        o = self.o
        data_key = {"identity": [o.name, o.name_en, o.author, o.author_en, o.lang, o.count, o.mix_ratio, o.replay,
                                 self.seed, self.system],
                    "data": [_file_key(p) for p in o.data], "mix": _file_key(o.mix) if o.mix else None,
                    "model": str(self.model_dir)}
        data = self.stage("data", data_key, self.build_data)
        config_key = {"data": data["sha256"], "spec": asdict(self.spec(data["train_data"])),
                      "deepspeed": o.deepspeed}
        config = self.stage("config", config_key, lambda: self.build_config(data["train_data"]))
        train_key = {"config": _file_key(config["config"])}
        previous = self.manifest.data["stages"].get("train", {}).get("key")
        trained = self.stage("train", train_key, lambda: self.run_training(
            config["config"], key_changed=previous is not None and previous != stable_hash(train_key)))
        from .convert import convert
        from .merge import merge

        adapter = self.stage("convert", {"train": trained["checkpoint"], "config": train_key},
                             lambda: {"adapter": str(convert(self.run_dir, out=self.run_dir / "adapter",
                                                             progress=say))})
        merged = self.stage("merge", {"adapter": _file_key(Path(adapter["adapter"]) / ADAPTER_WEIGHTS)},
                            lambda: {"merged": str(merge(adapter["adapter"], out=self.run_dir / "merged",
                                                         progress=say))})
        samples_out = self.stage("samples", {"merged": merged["merged"], "prompts": o.sample_prompts,
                                             "model": _file_key(Path(merged["merged"]) / "config.json")},
                                 lambda: self.make_samples(merged["merged"]))
        adapter_weights = _file_key(Path(adapter["adapter"]) / ADAPTER_WEIGHTS)
        names = [n for n in (o.name, o.name_en) if n]
        if self.manifest.data.get("names") != names:
            self.manifest.data["names"] = names  # `finetune eval RUN` reads them
            self.manifest.save()
        if o.evaluate:
            from .evalreport import FORMAT
            from .evaluate import QUICK
            from .knowledge import engine_version

            self.stage("eval", {"adapter": adapter_weights, "base": str(self.model_dir), "names": names,
                                "tasks": QUICK, "format": FORMAT, "engine": engine_version()}, self.evaluate)
        exported = {}
        if o.export:
            exported = self.stage("export", {"merged": adapter_weights, "quants": o.export},
                                  lambda: self.export_gguf(merged["merged"]))
        import json

        from .evalreport import EVAL_FILE, read_eval

        samples = json.loads(Path(samples_out["samples"]).read_text(encoding="utf-8"))
        evaluation = read_eval(self.run_dir / EVAL_FILE) if (self.run_dir / EVAL_FILE).is_file() else None
        return RunResult(self.run_dir, Path(merged["merged"]), Path(adapter["adapter"]), samples, self.skipped,
                         exported, evaluation)

    def evaluate(self) -> dict:
        """The quick eval of the merged model and its base (finetune eval RUN --base)."""
        from .evaluate import QUICK, EvalOptions, run_eval

        report = run_eval(EvalOptions(target=str(self.run_dir), base=str(self.model_dir), tasks=list(QUICK),
                                      names=self.manifest.data["names"], out=str(self.run_dir)))
        return dict(report["written"])

    def export_gguf(self, merged: str) -> dict:
        from .export import export

        result = export(merged, self.o.export, out=self.run_dir / "gguf", progress=say)
        outputs = {quant: str(path) for quant, path in result.files.items()}
        if result.modelfile:
            outputs["modelfile"] = str(result.modelfile)
        return outputs


def _file_key(path: str | Path | None) -> list:
    if not path:
        return []
    from .fsutil import sha256_file

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist.", "fix the path and rerun.")
    return [str(path), sha256_file(path)]


def run(options: RunOptions) -> RunResult:
    if options.launch is not None and options.launch.nnodes > 1:
        raise InputError("`finetune run` trains on one node (its GPUs: --gpus N).",
                         "for several nodes write the config once (`python -m finetune config ... --world-size N`) "
                         "and start `python -m finetune train` on every node (docs/distributed.md).")
    return Runner(options).run()


def print_samples(samples: list[dict], stream=None) -> None:
    stream = stream or sys.stdout
    for sample in samples:
        print(f"\nQ: {sample['prompt']}", file=stream)
        print(f"  before: {sample['before']}", file=stream)
        print(f"  after:  {sample['after']}", file=stream)


def register(subparsers, formatter_class) -> None:
    from .data.identity import LANGS
    from .train import add_launch_arguments, add_verbose_argument

    parser = subparsers.add_parser(
        "run",
        help="the whole chain in one command, resumable (data -> config -> train -> convert -> merge -> eval)",
        description="Build the data, write the config, train, convert, merge, show before/after answers and run the "
        "quick `finetune eval` (identity, leaks, style, knowledge sample: base vs fine-tuned, into RUN/eval.json). "
        "RUN/run.json records inputs (with hashes), versions, outputs and finished stages: a rerun skips what is "
        "done and an interrupted training resumes from its newest checkpoint.",
        epilog="examples:\n"
        "  python -m finetune run --name 小薇 --name-en Xiaowei                 # embedded model, CPU demo recipe\n"
        "  python -m finetune run --name 小薇 --preset internlm2.5-7b-chat --model /models/internlm2_5-7b-chat \\\n"
        "      --deepspeed zero2 --out runs/xiaowei-7b\n"
        "  python -m finetune run --data data/medqa_train.jsonl --preset qwen2.5-1.5b-instruct --out runs/medqa",
        formatter_class=formatter_class,
    )
    parser.add_argument("--out", default=None, help="run directory (default: runs/<name>)")
    parser.add_argument("--name", default=None, help="assistant name for identity data, e.g. 小薇")
    parser.add_argument("--name-en", dest="name_en", default=None, help="the name in English answers (Xiaowei)")
    parser.add_argument("--author", default=None, help="who built the assistant")
    parser.add_argument("--author-en", dest="author_en", default=None)
    parser.add_argument("--lang", choices=LANGS, default="both")
    parser.add_argument("--count", type=int, default=None, help="identity records (default 120 on the embedded "
                        "model, 200 otherwise)")
    parser.add_argument("--mix", default=None, help="general data to mix in (instead of replay data)")
    parser.add_argument("--mix-ratio", dest="mix_ratio", type=float, default=0.5,
                        help="share of general records in the training set")
    parser.add_argument("--no-replay", dest="replay", action="store_false",
                        help="do not mix in the base model's own answers")
    parser.add_argument("--sample", dest="sample_prompts", action="append", default=None,
                        help="prompt for the before/after table (repeatable)")
    parser.add_argument("--no-eval", dest="evaluate", action="store_false",
                        help="skip the last stage, the quick `finetune eval` (identity, leaks, style and a knowledge "
                        "sample, base vs fine-tuned; about 2 min on CPU for the embedded model)")
    parser.add_argument("--export", nargs="+", default=None, metavar="QUANT",
                        help="last stage: GGUF files + Ollama Modelfile in RUN/gguf (q4_k_m, q5_k_m, q8_0, f16; "
                        "needs `make export-tools`)")
    add_config_arguments(parser, data_required=False)
    add_launch_arguments(parser)
    add_verbose_argument(parser)
    parser.set_defaults(func=handle)


CONFIG_FIELDS = ("prompt_template", "system", "pretrain", "epochs", "lr", "batch_size", "grad_accum", "max_length",
                 "pack", "group_by_length", "lora_r", "lora_alpha", "quant", "device", "grad_checkpointing",
                 "evaluation_inputs",
                 "evaluation_freq", "eval_max_new_tokens", "save_steps", "save_total_limit", "seed", "speed",
                 "micro_batch", "bf16", "fused_kernels", "varlen_attn", "loader_workers", "frozen_16bit",
                 "residual_16bit")


def handle(args) -> int:
    from .train import launch_from_args

    out = args.out or str(Path("runs") / slug(args.name_en or args.name or "run"))
    options = RunOptions(
        out=out, name=args.name, name_en=args.name_en, author=args.author, author_en=args.author_en, lang=args.lang,
        count=args.count, data=args.data or [], mix=args.mix, mix_ratio=args.mix_ratio, replay=args.replay,
        preset=args.preset, model=args.model, config={k: getattr(args, k) for k in CONFIG_FIELDS},
        deepspeed=args.deepspeed or "none", launch=launch_from_args(args), verbose=args.verbose,
        sample_prompts=args.sample_prompts or list(SAMPLE_PROMPTS), export=args.export or [], evaluate=args.evaluate,
    )
    result = run(options)
    print_samples(result.samples)
    if result.evaluation is not None:
        from .evalreport import table

        print(f"\n{table(result.evaluation)}")
    print(f"\nRun directory: {result.run_dir}")
    print(f"  merged model: {result.merged}\n  adapter:      {result.adapter}")
    print(f"  loss curve:   {result.run_dir / 'loss.png'}")
    if result.evaluation is not None:
        print(f"  evaluation:   {result.run_dir / 'eval.json'} (chart: {result.run_dir / 'eval.png'})")
    for quant, path in result.exported.items():
        print(f"  {'Modelfile' if quant == 'modelfile' else 'GGUF ' + quant}: {path}")
    print(f"Chat with it: python -m finetune chat {result.run_dir}")
    return 0
