"""The model card (README.md): YAML front matter the hubs read, then a bilingual (zh/en) body built from the run:
the decisions are made here, card_templates/model_card.md.jinja lays them out.

Everything here is deterministic (no dates, no local paths): the same run gives the same card, so a later upload
can tell that nothing changed.
"""

from __future__ import annotations

import functools
import json
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path

import jinja2
import yaml

from app import files, formats
from finetune import evalreport

from .errors import SourceError
from .hubs import git_url, hf_endpoint, modelscope_endpoint, repo_url

SAMPLE_CELL_CHARS = 300
XTUNER = "https://github.com/InternLM/xtuner"
VERSION_KEYS = ("xtuner", "transformers", "peft", "torch")
TEMPLATE_DIR = Path(__file__).parent / "card_templates"


@dataclass
class TrainingSummary:
    """What the card says about training; every field may be missing (an adapter folder without its run)."""

    records: int | None = None
    epochs: float | None = None
    lr: float | None = None
    batch_size: int | None = None
    grad_accum: int | None = None
    max_length: int | None = None
    iterations: int | None = None
    final_loss: float | None = None
    seconds: float | None = None
    versions: dict[str, str] = field(default_factory=dict)
    samples: list[dict] = field(default_factory=list)
    found: bool = False  # a run.json was read
    evaluation: dict | None = None  # RUN/eval.json (`finetune eval`), when it is about this run's adapter


@dataclass
class CardInfo:
    hub: str
    repo: str
    kind: str  # adapter | merged | gguf
    base_id: str
    license: str
    quant: str | None  # 4bit | 8bit | None
    prompt_template: str = ""
    system: str = ""
    lora_r: int | None = None
    lora_alpha: int | None = None
    has_tokenizer: bool = True
    has_loss_png: bool = False
    trust_remote_code: bool = False
    summary: TrainingSummary = field(default_factory=TrainingSummary)
    gguf_files: list[str] = field(default_factory=list)  # kind gguf: the files, e.g. xiaowei-Q4_K_M.gguf
    has_modelfile: bool = False
    has_eval_png: bool = False


# ------------------------------------------------------------------------------------------- run reading


FIX_RUN_FILE = "restore it, or publish the adapter folder (RUN/adapter) instead of the run; nothing was staged."


def _read_json(path: Path) -> dict | list | None:
    """A JSON file's content, None when there is none; a broken one is a SourceError naming it."""
    if not path.is_file():
        return None
    return files.read_json(path, SourceError, fix=FIX_RUN_FILE)


def _last_metrics(path: Path) -> dict:
    """The last record of work_dir/metrics.jsonl that has a loss (one JSON object per logged iteration)."""
    last: dict = {}
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and isinstance(record.get("loss"), int | float):
                    last = record
    except (OSError, UnicodeDecodeError):  # the card is written without the figures
        return {}
    return last


def _count_lines(path: Path) -> int | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return sum(1 for line in fh if line.strip())
    except (OSError, UnicodeDecodeError):
        return None


def training_summary(run_dir: Path | None) -> TrainingSummary:
    """Read RUN/run.json (stages, spec, versions), RUN/work_dir/metrics.jsonl and RUN/samples.json."""
    summary = TrainingSummary()
    if run_dir is None:
        return summary
    manifest = formats.read_run_manifest(run_dir, SourceError, fix=FIX_RUN_FILE)
    if not manifest:
        return summary
    summary.found = True
    stages = manifest.get("stages") if isinstance(manifest.get("stages"), dict) else {}
    spec = formats.run_spec(manifest)
    data_out = (stages.get("data") or {}).get("outputs") or {}
    train = stages.get("train") or {}
    train_out = train.get("outputs") or {}
    records = data_out.get("records")
    if not isinstance(records, int):
        records = _count_lines(run_dir / "data" / "train.jsonl")
    if not isinstance(records, int):
        records = spec.get("num_samples") if isinstance(spec.get("num_samples"), int) else None
    summary.records = records
    for name in ("epochs", "lr", "batch_size", "grad_accum", "max_length"):
        value = spec.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            setattr(summary, name, value)
    work_dir = Path(str(train_out.get("work_dir") or run_dir / "work_dir"))
    metrics = _last_metrics(run_dir / "work_dir" / "metrics.jsonl") or _last_metrics(work_dir / "metrics.jsonl")
    loss = metrics.get("loss", train_out.get("final_loss"))
    summary.final_loss = float(loss) if isinstance(loss, int | float) else None
    iterations = metrics.get("iter", train_out.get("iterations"))
    summary.iterations = int(iterations) if isinstance(iterations, int) else None
    seconds = train.get("seconds")
    summary.seconds = float(seconds) if isinstance(seconds, int | float) else None
    versions = manifest.get("versions") if isinstance(manifest.get("versions"), dict) else {}
    summary.versions = {k: str(versions[k]) for k in VERSION_KEYS if versions.get(k) not in (None, "not installed")}
    samples = _read_json(run_dir / "samples.json")
    if isinstance(samples, list):
        summary.samples = [s for s in samples if isinstance(s, dict) and "prompt" in s]
    summary.evaluation = current_evaluation(run_dir)
    return summary


def current_evaluation(run_dir: Path | None) -> dict | None:
    """RUN/eval.json when it measured the adapter the run holds now (a report of an earlier training is left out)."""
    if run_dir is None:
        return None
    report = _read_json(run_dir / evalreport.EVAL_FILE)
    if not isinstance(report, dict) or not isinstance(report.get("models"), dict) \
            or not isinstance(report["models"].get("tuned"), dict):
        return None
    measured = report.get("adapter_sha256")
    weights = run_dir / "adapter" / "adapter_model.safetensors"
    if measured and weights.is_file():
        from finetune.fsutil import sha256_file

        if sha256_file(weights) != measured:
            return None
    return report


# ------------------------------------------------------------------------------------------- front matter


def front_matter(info: CardInfo) -> dict:
    if info.kind == "gguf":
        return _gguf_front_matter(info)
    tags = ["xtuner", "lora"]
    if info.quant == "4bit":
        tags.append("qlora")
    tags.append("peft" if info.kind == "adapter" else "merged-lora")
    meta: dict = {
        "base_model": info.base_id,
        "library_name": "peft" if info.kind == "adapter" else "transformers",
        "pipeline_tag": "text-generation",
        "tags": tags,
        "license": info.license,
        "language": ["zh", "en"],
    }
    if info.kind == "merged":
        # A LoRA merged into one base is a fine-tune of it ("merge" means several models merged together).
        meta["base_model_relation"] = "finetune"
    if info.hub == "modelscope":
        meta["tasks"] = ["text-generation"]
        meta["frameworks"] = ["pytorch"]
    return meta


def _gguf_front_matter(info: CardInfo) -> dict:
    """The hub lists a repo of .gguf files as a GGUF model; base_model + relation `finetune` put it under its base
    (`quantized` would claim it is the base itself, quantized)."""
    meta: dict = {"base_model": info.base_id, "base_model_relation": "finetune", "library_name": "gguf",
                  "pipeline_tag": "text-generation", "tags": ["gguf", "llama.cpp", "ollama", "xtuner", "lora"],
                  "license": info.license, "language": ["zh", "en"]}
    if info.hub == "modelscope":
        meta["tasks"] = ["text-generation"]
        meta["frameworks"] = ["gguf"]
    return meta


def quant_label(filename: str) -> str:
    """`xiaowei-Q4_K_M.gguf` -> `Q4_K_M`."""
    return Path(filename).stem.rsplit("-", 1)[-1]


def render_front_matter(meta: dict) -> str:
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, default_flow_style=False) + "---\n"


def parse_front_matter(card: str) -> dict:
    """The YAML between the leading `---` lines (tests and the upload step use it to validate the card)."""
    if not card.startswith("---\n"):
        raise ValueError("the card does not start with YAML front matter ('---')")
    end = card.find("\n---\n", 4)
    if end < 0:
        raise ValueError("the card's YAML front matter has no closing '---'")
    data = yaml.safe_load(card[4:end + 1])
    if not isinstance(data, dict):
        raise ValueError("the card's YAML front matter is not a mapping")
    return data


# ------------------------------------------------------------------------------------------- card


@dataclass(frozen=True)
class EvaluationSection:
    harness_version: str  # "" when the report does not say
    rows: tuple[tuple[str, str, str, str], ...]  # metric, before, after, goal: Markdown cells
    style_measure: str
    has_chart: bool


@dataclass(frozen=True)
class TransformersUsage:
    download_from: str  # the hub the reader downloads from first ("" for Hugging Face: nothing to download)
    download: tuple[str, ...]  # shell lines
    base_py: str
    model_py: str
    tokenizer_py: str
    trust: str  # the from_pretrained argument custom-code models need, or ""
    xtuner_command: str
    app_commands: tuple[str, ...]


@dataclass(frozen=True)
class GgufUsage:
    ollama_pull: str
    modelfile: bool
    download: str
    ollama_name: str
    llama_command: str
    first_file: str


@dataclass(frozen=True)
class CardView:
    """Everything the card says, decided; card_templates/model_card.md.jinja only lays it out."""

    front_matter: str
    name: str
    kind: str  # adapter | merged | gguf
    xtuner: str
    base_id: str
    base_link: str
    method_name: str
    gguf_quants: str
    template_note: str  # the training template the tokenizer (or the GGUF) carries; "" when there is none
    has_modelfile: bool
    summary_rows: tuple[tuple[str, str], ...]
    found_run: bool
    has_loss_png: bool
    samples: tuple[tuple[str, str, str], ...]
    evaluation: EvaluationSection | None
    usage: TransformersUsage | GgufUsage
    license: str
    url: str


def build_card(info: CardInfo) -> str:
    return _template().render(asdict(card_view(info)))


def card_view(info: CardInfo) -> CardView:
    return CardView(
        front_matter=render_front_matter(front_matter(info)),
        name=info.repo.split("/")[1],
        kind=info.kind,
        xtuner=XTUNER,
        base_id=info.base_id,
        base_link=_base_link(info),
        method_name=_method(info).split(",")[0],
        gguf_quants=", ".join(quant_label(f) for f in info.gguf_files),
        template_note=_template_note(info),
        has_modelfile=info.has_modelfile,
        summary_rows=_summary_rows(info),
        found_run=info.summary.found,
        has_loss_png=info.has_loss_png,
        samples=tuple(tuple(_cell(sample.get(key)) for key in ("prompt", "before", "after"))
                      for sample in info.summary.samples),
        evaluation=_evaluation(info),
        usage=_gguf_usage(info) if info.kind == "gguf" else _transformers_usage(info),
        license=info.license,
        url=repo_url(info.hub, info.repo),
    )


def _cell(text: object, limit: int = SAMPLE_CELL_CHARS) -> str:
    value = " ".join(str(text if text is not None else "").split())
    if len(value) > limit:
        value = value[: limit - 1].rstrip() + "…"
    return value.replace("\\", "\\\\").replace("|", "\\|") or " "


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:g}"


def _base_link(info: CardInfo) -> str:
    if info.hub == "modelscope":
        return f"[{info.base_id}]({modelscope_endpoint()}/models/{info.base_id})"
    return f"[{info.base_id}]({hf_endpoint()}/{info.base_id})"


def _method(info: CardInfo) -> str:
    parts = ["QLoRA (4-bit)" if info.quant == "4bit" else "LoRA (8-bit base)" if info.quant == "8bit" else "LoRA"]
    if info.lora_r is not None:
        parts.append(f"r={info.lora_r}")
    if info.lora_alpha is not None:
        parts.append(f"alpha={info.lora_alpha}")
    return ", ".join(parts)


def _template_note(info: CardInfo) -> str:
    """A GGUF carries the training template in its metadata; the other kinds only in their tokenizer."""
    if info.kind != "gguf" and not info.has_tokenizer:
        return ""
    return info.prompt_template


def _summary_rows(info: CardInfo) -> tuple[tuple[str, str], ...]:
    s = info.summary
    rows = [("基座模型 / Base model", f"`{info.base_id}`"), ("方法 / Method", _method(info))]
    if info.gguf_files:
        rows.append(("GGUF 文件 / GGUF files", ", ".join(f"`{f}`" for f in info.gguf_files)))
    if info.prompt_template:
        rows.append(("对话模板 / Prompt template", f"`{info.prompt_template}`"))
    if info.system:
        rows.append(("系统提示 / System prompt", _cell(info.system)))
    if s.records is not None:
        rows.append(("训练数据 / Training data", f"{s.records} 条 / records"))
    if s.epochs is not None:
        rows.append(("轮数 / Epochs", _number(s.epochs)))
    if s.lr is not None:
        rows.append(("学习率 / Learning rate", _number(s.lr)))
    if s.batch_size is not None:
        accum = f" × {s.grad_accum} (梯度累积 / grad accum)" if s.grad_accum and s.grad_accum > 1 else ""
        rows.append(("批大小 / Batch size", f"{s.batch_size}{accum}"))
    if s.max_length is not None:
        rows.append(("最大长度 / Max length", f"{s.max_length} tokens"))
    if s.iterations is not None:
        rows.append(("迭代数 / Iterations", str(s.iterations)))
    if s.final_loss is not None:
        rows.append(("最终损失 / Final loss", f"{s.final_loss:.4g}"))
    if s.seconds is not None:
        rows.append(("训练时长 / Training time", f"{s.seconds:.0f} s"))
    if s.versions:
        rows.append(("版本 / Versions", ", ".join(f"{k} {v}" for k, v in s.versions.items())))
    return tuple(rows)


def _evaluation(info: CardInfo) -> EvaluationSection | None:
    report = info.summary.evaluation
    if not report:
        return None
    rows = evalreport.rows(report)
    if not rows:
        return None
    engine = (report.get("engine") or {}).get("lm_eval")
    cells = tuple((_cell(f"{row.label_zh} / {row.label}"), evalreport.fmt(row.before, row.percent),
                   evalreport.fmt(row.after, row.percent), _cell(row.goal) if row.goal else "-") for row in rows)
    return EvaluationSection(harness_version=str(engine) if engine else "", rows=cells,
                             style_measure=evalreport.STYLE_MEASURE, has_chart=info.has_eval_png)


@dataclass
class _Refs:
    """How a reader refers to the published model and its base after any download step."""

    download: list[str]  # shell lines to run first ([] for Hugging Face)
    model_py: str  # python expression: the published repo (hub id or local folder)
    base_py: str
    model_cli: str  # shell word
    base_cli: str


def _py(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a double-quoted Python string literal


def _refs(info: CardInfo) -> _Refs:
    name = info.repo.split("/")[1]
    if info.hub == "hf":
        return _Refs([], _py(info.repo), _py(info.base_id), info.repo, info.base_id)
    if info.hub == "modelscope":
        base_dir = info.base_id.split("/")[1]
        download = [f"modelscope download --model {info.repo} --local_dir ./{name}"]
        if info.kind == "adapter":
            download.append(f"modelscope download --model {info.base_id} --local_dir ./{base_dir}")
        return _Refs(download, _py(f"./{name}"), _py(f"./{base_dir}"), f"./{name}", f"./{base_dir}")
    return _Refs(["git lfs install", f"git clone {git_url(info.hub, info.repo)} ./{name}"], _py(f"./{name}"),
                 _py(info.base_id), f"./{name}", info.base_id)


def _gguf_usage(info: CardInfo) -> GgufUsage:
    first = info.gguf_files[0]
    quant = quant_label(first)
    if info.hub == "modelscope":
        pull, download = f"modelscope.cn/{info.repo}:{quant}", f"modelscope download --model {info.repo} --local_dir ."
    else:
        pull, download = f"hf.co/{info.repo}:{quant}", f"huggingface-cli download {info.repo} --local-dir ."
    llama = f"llama-server -hf {info.repo}:{quant}" if info.hub == "hf" else f"{download} && llama-server -m {first}"
    return GgufUsage(ollama_pull=pull, modelfile=info.has_modelfile, download=download,
                     ollama_name=info.repo.split("/")[1].lower(), llama_command=llama, first_file=first)


def _transformers_usage(info: CardInfo) -> TransformersUsage:
    refs = _refs(info)
    return TransformersUsage(
        download_from="ModelScope" if info.hub == "modelscope" else "OpenXLab (git + git-lfs)",
        download=tuple(refs.download),
        base_py=refs.base_py,
        model_py=refs.model_py,
        tokenizer_py=refs.model_py if (info.has_tokenizer or info.kind == "merged") else refs.base_py,
        trust=", trust_remote_code=True" if info.trust_remote_code else "",
        xtuner_command=_xtuner_command(info, refs),
        app_commands=_app_commands(info, refs),
    )


def _xtuner_command(info: CardInfo, refs: _Refs) -> str:
    words = ["xtuner", "chat", refs.base_cli if info.kind == "adapter" else refs.model_cli]
    if info.kind == "adapter":
        words += ["--adapter", refs.model_cli]
    if info.prompt_template:
        words += ["--prompt-template", info.prompt_template]
    if info.system:
        words += ["--system", info.system]
    return " ".join(shlex.quote(word) for word in words)


def _app_commands(info: CardInfo, refs: _Refs) -> tuple[str, ...]:
    if info.kind != "adapter":
        model = shlex.quote(refs.model_cli)
        return f"python -m app {model}", f"MODEL_ID={model} python app.py"
    base_flag = f" --base {shlex.quote(refs.base_cli)}" if info.hub == "modelscope" else ""
    return (f"python -m app --adapter {shlex.quote(refs.model_cli)}{base_flag}",
            f"MODEL_ID={shlex.quote(refs.base_cli)} ADAPTER_ID={shlex.quote(refs.model_cli)} python app.py")


@functools.cache
def _template() -> jinja2.Template:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR), undefined=jinja2.StrictUndefined, autoescape=False,
        keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    return environment.get_template("model_card.md.jinja")
