"""The model card (README.md): YAML front matter the hubs read, then a bilingual (zh/en) body built from the run.

Everything here is deterministic (no dates, no local paths): the same run gives the same card, so a later upload
can tell that nothing changed.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from app import files
from finetune import evalreport

from .errors import SourceError
from .hubs import git_url, hf_endpoint, modelscope_endpoint, repo_url

SAMPLE_CELL_CHARS = 300
XTUNER = "https://github.com/InternLM/xtuner"
VERSION_KEYS = ("xtuner", "transformers", "peft", "torch")


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


def _read_json(path: Path) -> dict | list | None:
    """A JSON file's content, None when there is none; a broken one is a SourceError naming it."""
    if not path.is_file():
        return None
    return files.read_json(path, SourceError, fix="restore it, or publish the adapter folder (RUN/adapter) instead "
                           "of the run; nothing was staged.")


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
    manifest = _read_json(run_dir / "run.json")
    if not isinstance(manifest, dict):
        return summary
    summary.found = True
    stages = manifest.get("stages") if isinstance(manifest.get("stages"), dict) else {}
    spec = manifest.get("spec") if isinstance(manifest.get("spec"), dict) else {}
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


# ------------------------------------------------------------------------------------------- body


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


def _intro(info: CardInfo) -> list[str]:
    base = _base_link(info)
    if info.kind == "gguf":
        quants = ", ".join(quant_label(f) for f in info.gguf_files)
        zh = (f"**中文**：把用 [XTuner]({XTUNER}) 训练的 LoRA 合并进 {base} 后，"
              f"用 llama.cpp 自己的转换和量化工具导出的 GGUF 文件（{quants}），可以在 Ollama、llama.cpp、LM Studio "
              "中离线运行。")
        en = (f"**English**: {base} with a LoRA trained by [XTuner]({XTUNER}) merged in, exported to GGUF ({quants}) "
              "with llama.cpp's own converter and quantizer: runs offline in Ollama, llama.cpp and LM Studio.")
        lines = [zh, "", en]
        if info.prompt_template:
            lines += ["", f"GGUF 元数据带有训练时的对话模板（XTuner `{info.prompt_template}`）"
                      + ("，`Modelfile` 的 TEMPLATE 渲染出相同的文本" if info.has_modelfile else "") + "。"
                      f" / The GGUF metadata carries the training chat template (XTuner `{info.prompt_template}`)"
                      + ("; the `Modelfile`'s TEMPLATE renders the same text" if info.has_modelfile else "") + "."]
        return lines
    if info.kind == "adapter":
        method = _method(info).split(",")[0]
        zh = (f"**中文**：这是用 [XTuner]({XTUNER}) 在 {base} 上做 {method} 微调得到的 PEFT 适配器（adapter）："
              "体积小，使用时加载在基座模型之上。")
        en = (f"**English**: a PEFT adapter for {base}, fine-tuned with [XTuner]({XTUNER}) ({method}). It is small; "
              "load it on top of the base model.")
    else:
        zh = (f"**中文**：这是把用 [XTuner]({XTUNER}) 训练的 LoRA 合并进 {base} 后得到的完整模型，"
              "可以像普通 Transformers 模型一样直接加载。")
        en = (f"**English**: {base} with a LoRA trained by [XTuner]({XTUNER}) merged into its weights: a complete "
              "model that loads like any Transformers model.")
    lines = [zh, "", en]
    if info.has_tokenizer and info.prompt_template:
        template = info.prompt_template
        lines += ["", f"分词器带有训练时的对话模板（XTuner `{template}`），"
                  "`apply_chat_template` 的提示与训练时一致。"
                  f" / The tokenizer carries the training chat template (XTuner `{template}`), so "
                  "`apply_chat_template` prompts exactly as in training."]
    return lines


def _summary_table(info: CardInfo) -> list[str]:
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
    lines = ["| 项目 / Item | 值 / Value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    if not s.found:
        lines += ["", "没有找到训练记录（run.json），以上只列出适配器本身的信息。 / No training record (run.json) was "
                  "found next to this model; the table shows only what the files themselves say."]
    return lines


def _evaluation(info: CardInfo) -> list[str]:
    report = info.summary.evaluation
    if not report:
        return []
    rows = evalreport.rows(report)
    if not rows:
        return []
    engine = (report.get("engine") or {}).get("lm_eval")
    lines = ["## 评估 / Evaluation", "",
             "`python -m finetune eval` 的结果：身份与泄漏用训练数据里没有的问题（贪心解码），风格比较日常问题的回答，"
             "知识题由 lm-evaluation-harness 按每个选项的对数似然打分。微调前 = 基座模型。"
             " / From `python -m finetune eval`: identity and leaks on held-out questions the training data never "
             "contained (greedy answers), style from the everyday answers, knowledge questions scored by "
             f"lm-evaluation-harness{' ' + str(engine) if engine else ''} (the log-likelihood of each option). "
             "Before = the base model.", "",
             "| 指标 / Metric | 微调前 / Before | 微调后 / After | 目标 / Goal |", "|---|---|---|---|"]
    for row in rows:
        cells = [_cell(f"{row.label_zh} / {row.label}"), evalreport.fmt(row.before, row.percent),
                 evalreport.fmt(row.after, row.percent), _cell(row.goal) if row.goal else "-"]
        lines.append(f"| {' | '.join(cells)} |")
    lines += ["", f"风格的相似度 / Style similarity: {evalreport.STYLE_MEASURE}.", ""]
    if info.has_eval_png:
        lines += ["![评估 / evaluation](eval.png)", ""]
    return lines


def _samples(info: CardInfo) -> list[str]:
    if not info.summary.samples:
        return []
    lines = ["## 微调前后对比 / Before and after", "",
             "同一问题，基座模型（微调前）与本模型（微调后）的回答（训练结束时自动生成）。"
             " / The same prompts answered by the base model (before) and by this model (after), generated when "
             "training finished.", "",
             "| 问题 / Prompt | 微调前 / Before | 微调后 / After |", "|---|---|---|"]
    for sample in info.summary.samples:
        cells = [_cell(sample.get(key)) for key in ("prompt", "before", "after")]
        lines.append(f"| {' | '.join(cells)} |")
    return lines + [""]


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


def _gguf_usage(info: CardInfo) -> list[str]:
    first = info.gguf_files[0]
    quant = quant_label(first)
    if info.hub == "modelscope":
        pull, download = f"modelscope.cn/{info.repo}:{quant}", f"modelscope download --model {info.repo} --local_dir ."
    else:
        pull, download = f"hf.co/{info.repo}:{quant}", f"huggingface-cli download {info.repo} --local-dir ."
    lines = ["## 使用方法 / How to use", "", "### Ollama", "", "```bash", f"ollama run {pull}", "```", ""]
    if info.has_modelfile:
        name = info.repo.split("/")[1].lower()
        lines += ["或者下载后用本仓库的 `Modelfile`（训练时的模板、停止词和默认系统提示）："
                  " / Or download and use this repo's `Modelfile` (the training template, stop words and default "
                  "system prompt):", "", "```bash", download, f"ollama create {name} -f Modelfile",
                  f"ollama run {name}", "```", ""]
    lines += ["### llama.cpp", "", "```bash", f"llama-server -hf {info.repo}:{quant}" if info.hub == "hf"
              else f"{download} && llama-server -m {first}", "```", "",
              "### 聊天网页 / Chat app (xtuner-assistant-kit)", "", "```bash", f"python -m app {first}", "```", ""]
    return lines


def _usage(info: CardInfo) -> list[str]:
    if info.kind == "gguf":
        return _gguf_usage(info)
    refs = _refs(info)
    trust = ", trust_remote_code=True" if info.trust_remote_code else ""
    lines = ["## 使用方法 / How to use", ""]
    if refs.download:
        where = "ModelScope" if info.hub == "modelscope" else "OpenXLab (git + git-lfs)"
        lines += [f"先下载到本地 / First download from {where}:", "", "```bash", *refs.download, "```", ""]
    tok_ref = refs.model_py if (info.has_tokenizer or info.kind == "merged") else refs.base_py
    if info.kind == "adapter":
        lines += ["### PEFT + Transformers", "", "```python",
                  "from peft import PeftModel",
                  "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                  f"base = AutoModelForCausalLM.from_pretrained({refs.base_py}, torch_dtype=\"auto\"{trust})",
                  f"model = PeftModel.from_pretrained(base, {refs.model_py})  # model.merge_and_unload() to merge",
                  f"tokenizer = AutoTokenizer.from_pretrained({tok_ref}{trust})"]
    else:
        lines += ["### Transformers", "", "```python",
                  "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                  f"model = AutoModelForCausalLM.from_pretrained({refs.model_py}, torch_dtype=\"auto\"{trust})",
                  f"tokenizer = AutoTokenizer.from_pretrained({tok_ref}{trust})"]
    lines += ["messages = [{\"role\": \"user\", \"content\": \"请介绍一下你自己\"}]",
              "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\")",
              "output = model.generate(inputs, max_new_tokens=128)",
              "print(tokenizer.decode(output[0][inputs.shape[1]:], skip_special_tokens=True))", "```", ""]
    xtuner = ["xtuner", "chat", refs.base_cli if info.kind == "adapter" else refs.model_cli]
    if info.kind == "adapter":
        xtuner += ["--adapter", refs.model_cli]
    if info.prompt_template:
        xtuner += ["--prompt-template", info.prompt_template]
    if info.system:
        xtuner += ["--system", info.system]
    lines += ["### XTuner", "", "```bash", " ".join(shlex.quote(word) for word in xtuner), "```", ""]
    lines += ["### 聊天网页 / Chat app (xtuner-assistant-kit)", "",
              "本工具包的网页聊天应用（`python -m app`）可以直接加载它；托管演示（Space/创空间）用环境变量。"
              " / The kit's web chat (`python -m app`) loads it directly; a hosted demo reads environment variables.",
              "", "```bash"]
    if info.kind == "adapter":
        lines += [f"python -m app --adapter {shlex.quote(refs.model_cli)}"
                  + (f" --base {shlex.quote(refs.base_cli)}" if info.hub == "modelscope" else ""),
                  f"MODEL_ID={shlex.quote(refs.base_cli)} ADAPTER_ID={shlex.quote(refs.model_cli)} python app.py"]
    else:
        model = shlex.quote(refs.model_cli)
        lines += [f"python -m app {model}", f"MODEL_ID={model} python app.py"]
    return lines + ["```", ""]


def _limits(info: CardInfo) -> list[str]:
    return ["## 局限 / Limitations", "",
            f"- 继承基座模型 `{info.base_id}` 的许可证（`{info.license}`）与局限。它只在上表所列的数据上微调过，"
            "用于你的任务前请先自行评估。",
            f"- It inherits the license (`{info.license}`) and the limitations of `{info.base_id}`. It was fine-tuned "
            "only on the data summarized above; evaluate it on your own task before relying on it.", ""]


def build_card(info: CardInfo) -> str:
    name = info.repo.split("/")[1]
    body = [f"# {name}", "", "## 简介 / About", "", *_intro(info), "",
            "## 训练概要 / Training summary", "", *_summary_table(info), ""]
    if info.has_loss_png:
        body += ["### 损失曲线 / Loss curve", "", "![损失曲线 / loss curve](loss.png)", ""]
    body += _samples(info) + _evaluation(info) + _usage(info) + _limits(info)
    body += [f"发布地址 / Published at: {repo_url(info.hub, info.repo)}", ""]
    return render_front_matter(front_matter(info)) + "\n" + "\n".join(body).rstrip("\n") + "\n"
