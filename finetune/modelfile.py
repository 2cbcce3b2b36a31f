"""Ollama's Modelfile: FROM the GGUF, a TEMPLATE that renders exactly the text the model was trained on, its stop
words, the default system prompt and the chat page's generation defaults.

The TEMPLATE is Go text/template over Ollama's chat data (`.System`: every system message joined, the Modelfile's
SYSTEM when the request has none; `.Messages` with `.Role`/`.Content`; `.Think`/`.IsThinkSet`). It is built from the
same XTuner prompt template as the merged tokenizer's Jinja chat template (finetune/chat_template.py), piece by
piece; tests render both (the Go one with Go's own text/template) and compare the texts. Every literal is a quoted
Go string inside an action and every action trims the whitespace before it, so the line breaks that keep the
template readable never reach the prompt.
"""

from __future__ import annotations

import json

from .chat_template import _split_instruction, stop_words
from .errors import InputError

FILE = "Modelfile"
# the chat page's defaults (app/engine.py GenerationSettings), so the model answers in Ollama as on the page
PARAMETERS = {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "repeat_penalty": 1.1}
MAX_NUM_CTX = 4096  # Ollama's KV cache is sized for num_ctx up front; longer windows on request


def _go(text: str) -> str:
    """A Go interpreted string literal (JSON's escapes are a subset of Go's) inside an action."""
    return "{{ " + json.dumps(text, ensure_ascii=False) + " }}" if text else ""


def ollama_template(template: dict, *, name: str, bos: str | None, eos: str | None, train_bos: bool,
                    runtime_adds_bos: bool) -> str:
    """The Go template for the XTuner prompt template `template` (named `name`).

    `train_bos`: XTuner started the training text (and, for templates that end answers with eos, every later turn)
    with the BOS token `bos`; the template writes the first one itself unless the runtime adds it
    (`runtime_adds_bos`, the GGUF's add_bos_token)."""
    if any("{round}" in str(template.get(key, "")) for key in ("SYSTEM", "INSTRUCTION")):
        raise InputError(f"The prompt template '{name}' numbers its rounds, which an Ollama template cannot count.",
                         "use the GGUF with llama.cpp or LM Studio, which read the chat template inside it.")
    user_before, user_after, header = _split_instruction(template["INSTRUCTION"])
    need_eos = not template.get("SUFFIX_AS_EOS", False)
    if need_eos and not eos:
        raise InputError(f"The prompt template '{name}' ends answers with the eos token, and the GGUF names none.",
                         "export a model whose tokenizer has an eos token.")
    lines = [f'{{{{- /* finetune: the XTuner prompt template "{name}" the model was trained with */ -}}}}']
    if train_bos and bos and not runtime_adds_bos:
        lines.append(f"{{{{- {json.dumps(bos, ensure_ascii=False)} }}}}")
    if template.get("PREFIX"):
        lines.append(f"{{{{- {json.dumps(template['PREFIX'], ensure_ascii=False)} }}}}")
    fold = ""
    if template.get("SYSTEM_IN_USER"):
        fold_before, _, fold_after = template["SYSTEM_IN_USER"].partition("{system}")
        fold = f"{{{{ if and $first $.System }}}}{_go(fold_before)}{{{{ $.System }}}}{_go(fold_after)}{{{{ end }}}}"
    elif template.get("SYSTEM"):
        sys_before, _, sys_after = template["SYSTEM"].partition("{system}")
        lines.append(f"{{{{- if .System }}}}{_go(sys_before)}{{{{ .System }}}}{_go(sys_after)}{{{{ end }}}}")
    thinking = template.get("THINKING")
    lines += ["{{- $first := true }}", "{{- range $i, $m := .Messages }}"]
    if thinking:
        lines.append("{{- $last := eq (len (slice $.Messages $i)) 1 }}")
    lines.append('{{- if eq $m.Role "user" }}')
    if need_eos and train_bos and bos:
        lines.append(f"{{{{- if not $first }}}}{_go(bos)}{{{{ end }}}}")
    lines.append(f"{{{{- {json.dumps(user_before, ensure_ascii=False)} }}}}{fold}{{{{ $m.Content }}}}"
                 f"{_go(user_after)}")
    if thinking:
        lines.append(f"{{{{- if and $last $.IsThinkSet $.Think }}}}{_go(thinking['header'])}{{{{ else }}}}"
                     f"{_go(header)}{{{{ end }}}}")
    else:
        lines.append(f"{{{{- {json.dumps(header, ensure_ascii=False)} }}}}")
    closing = (template.get("SUFFIX") or "") + (eos if need_eos else "") + (template.get("SEP") or "")
    lines += ["{{- $first = false }}", '{{- else if eq $m.Role "assistant" }}',
              f"{{{{- $m.Content }}}}{_go(closing)}", "{{- end }}", "{{- end }}"]
    return "\n".join(lines)


def _quoted_block(keyword: str, text: str) -> str:
    if '"""' in text:
        raise InputError(f'The {keyword.lower()} text contains """, which a Modelfile cannot quote.',
                         f"remove the triple quotes from the {keyword.lower()} text.")
    return f'{keyword} """{text}"""'


def render(*, gguf_file: str, template_text: str, system: str, stops: list[str], num_ctx: int | None,
           source: str, others: list[str] = ()) -> str:
    """The Modelfile text (FROM a file beside it)."""
    out = [f"# Ollama Modelfile of {source}, written by `finetune export`",
           f"# ollama create NAME -f {FILE} && ollama run NAME"]
    out += [f"# other quantizations beside it: FROM ./{other}" for other in others]
    out += [f"FROM ./{gguf_file}", _quoted_block("TEMPLATE", template_text)]
    if system:
        out.append(_quoted_block("SYSTEM", system))
    out += [f"PARAMETER stop {json.dumps(stop, ensure_ascii=False)}" for stop in stops]
    out += [f"PARAMETER {key} {value}" for key, value in PARAMETERS.items()]
    out.append(f"PARAMETER num_ctx {min(num_ctx or MAX_NUM_CTX, MAX_NUM_CTX)}")
    return "\n".join(out) + "\n"


def modelfile_stops(template: dict, eos: str | None) -> list[str]:
    """The training template's stop words, and the eos token when answers end with it."""
    stops = stop_words(template)
    if eos and not template.get("SUFFIX_AS_EOS", False):
        stops.append(eos)
    return list(dict.fromkeys(s for s in stops if s))
