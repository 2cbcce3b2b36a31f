"""`finetune eval`: identity, leaks, kept style and knowledge, before vs after.

The quick eval itself runs once, as the last stage of conftest's trained_run (`finetune run`); these tests read its
eval.json. The rest runs on tiny random models and small files the tests write, except two real-model checks: the
scorer against lm-evaluation-harness's own reference, and a damaged adapter that must score lower than the base.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from finetune import evalreport, knowledge
from finetune.cli import main
from finetune.errors import DataError, InputError

sys.path.insert(0, str(Path(__file__).parent))

from tiny_families import make_tiny_model  # noqa: E402

# (question, choices, answer letter): everyday facts, so the embedded model gets some right and some wrong
QUESTIONS = [
    ("What is the largest planet in the solar system?", ("Mars", "Jupiter", "Venus", "Mercury"), "B"),
    ("Which star is at the centre of our solar system?", ("The Sun", "Sirius", "Polaris", "Vega"), "A"),
    ("What do we call a rock that falls from space to Earth?", ("A comet", "A moon", "A meteorite", "A nebula"), "C"),
    ("How many moons does Earth have?", ("Two", "Three", "None", "One"), "D"),
    ("What is the closest planet to Earth's orbit on the inside?", ("Venus", "Saturn", "Neptune", "Uranus"), "A"),
    ("Which planet is known as the red planet?", ("Earth", "Mars", "Jupiter", "Saturn"), "B"),
    ("Which planet has the hottest surface?", ("Mercury", "Venus", "Mars", "Jupiter"), "B"),
    ("Which planet has the shortest day?", ("Mercury", "Venus", "Jupiter", "Mars"), "C"),
]


def write_mmlu(folder: Path, subjects: dict[str, list[tuple]], *, dev: bool = False) -> Path:
    """An MMLU-layout folder: test/SUBJECT_test.csv without a header (and dev/SUBJECT_dev.csv)."""
    import csv

    for split in ("test", "dev") if dev else ("test",):
        (folder / split).mkdir(parents=True, exist_ok=True)
        for subject, rows in subjects.items():
            with open(folder / split / f"{subject}_{split}.csv", "w", newline="", encoding="utf-8") as fh:
                csv.writer(fh).writerows([q, *choices, answer] for q, choices, answer in rows)
    return folder


# --------------------------------------------------------------------------------------------- the run's stage


@pytest.fixture(scope="module")
def run_eval_json(trained_run):
    return json.loads((trained_run / "eval.json").read_text(encoding="utf-8"))


def test_run_ends_with_the_quick_eval(trained_run, run_eval_json, trained_names):
    report = run_eval_json
    manifest = json.loads((trained_run / "run.json").read_text())
    assert manifest["stages"]["eval"]["done"] and manifest["names"] == list(trained_names)
    assert report["names"] == list(trained_names) and report["tasks"] == [
        "identity", "leaks", "style", "sample-en", "sample-zh"]
    tuned, base = report["models"]["tuned"], report["models"]["base"]
    assert tuned["identity"]["n"] == 30 and tuned["leaks"]["n"] == 30
    # the quick version: the base answers only the everyday questions (its leaks, its style) and the sample
    assert "identity" not in base and base["leaks"]["rate"] == 0
    for model in (tuned, base):
        assert set(model["knowledge"]) == {"sample-en", "sample-zh"}
        assert all(model["knowledge"][b]["n"] == 16 for b in ("sample-en", "sample-zh"))
        assert 0 < model["style"]["diversity"] <= 1
    assert 0 < tuned["style"]["similarity_to_base"] <= 1
    assert report["adapter_sha256"] and report["engine"]["lm_eval"] == "0.4.13"
    assert (trained_run / "eval.png").read_bytes()[:4] == b"\x89PNG"
    assert report["seconds"] < 240


def test_the_demo_recipe_names_itself_on_held_out_questions(run_eval_json):
    """The recipe's identity goal (>= 95 %) on 30 phrasings the training data never contains."""
    identity = run_eval_json["models"]["tuned"]["identity"]
    assert identity["rate"] >= evalreport.GOALS["identity"], [a for a in identity["answers"] if not a["with_name"]]
    assert run_eval_json["goals_met"]["identity"]


def test_the_demo_recipe_keeps_everyday_answers_almost_free_of_the_name(run_eval_json):
    """The recipe's leak goal (<= 5 %) on 30 everyday questions the training data never contains.

    Measured 1/30 for the suite's 星河/Xinghe and for 小薇/Xiaowei (docs/benchmarks.md) since the replay data has 160
    everyday prompts; with 80 it was 2/30 for 星河.
    """
    leaks = run_eval_json["models"]["tuned"]["leaks"]
    assert leaks["rate"] <= evalreport.GOALS["leaks"], [a for a in leaks["answers"] if a["with_name"]]
    assert run_eval_json["goals_met"]["leaks"]


def test_a_damaged_adapter_scores_visibly_lower_than_the_base(trained_run, run_eval_json, embedded_model):
    """The eval must be able to fail: the run's own adapter scaled up (LoRA B x8) until it repeats itself. Its
    knowledge and style, measured the way the run's eval measured the base, are visibly worse."""
    import torch
    from peft import PeftModel

    from finetune.evaluate import Tasks, compare, evaluate_model
    from finetune.modelload import load_model, load_tokenizer

    model, _ = load_model(embedded_model)
    model = PeftModel.from_pretrained(model, trained_run / "adapter")
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "lora_B" in name:
                weight.mul_(8)
    model = model.merge_and_unload()
    tasks = Tasks(["style"], knowledge.Plan([knowledge.sample_benchmarks(per_subject=4)[0]]))  # the quick sample-en
    damaged = evaluate_model(model, load_tokenizer(trained_run / "merged"), tasks, names=[], label="damaged")
    base, tuned = run_eval_json["models"]["base"], run_eval_json["models"]["tuned"]
    compare(damaged, base)
    assert damaged["knowledge"]["sample-en"]["acc"] <= base["knowledge"]["sample-en"]["acc"] - 0.25, damaged
    assert damaged["style"]["diversity"] <= base["style"]["diversity"] - 0.15, damaged["style"]["answers"]
    assert damaged["style"]["similarity_to_base"] <= tuned["style"]["similarity_to_base"] - 0.15


def test_eval_table_has_before_and_after(run_eval_json):
    text = evalreport.table(run_eval_json)
    lines = text.splitlines()
    assert lines[0].split() == ["metric", "base", "tuned", "goal"]
    assert any(line.startswith("identity:") and line.rstrip().endswith("≥ 95%") for line in lines)
    assert any(line.startswith("sample-en: accuracy (cloze, n=16)") for line in lines)


# --------------------------------------------------------------------------------------------- the scorer


def _hand_scored(model, tokenizer, contexts_and_options: list[tuple[str, list[str]]]) -> list[int]:
    """argmax over options of sum log P(option | context), tokenised as lm-evaluation-harness does (context and
    context+option encoded by the tokenizer as it is, the option's tokens are what follows the context's)."""
    import torch

    picks = []
    for context, options in contexts_and_options:
        scores = []
        for option in options:
            whole = tokenizer.encode(context + option)
            n_context = len(tokenizer.encode(context))
            with torch.inference_mode():
                logits = model(torch.tensor([whole[:-1]])).logits[0].float().log_softmax(-1)
            scores.append(sum(logits[i - 1, whole[i]].item() for i in range(n_context, len(whole))))
        picks.append(max(range(len(options)), key=lambda i: scores[i]))
    return picks


def test_scorer_agrees_with_the_engines_own_task_and_a_hand_count(embedded_model, tmp_path):
    """Our reader + the engine fed in-process with the loaded model vs lm-evaluation-harness's own MMLU task files
    (its prompt, its `hf` model loader, its json data loader) and a hand count of the same log-likelihoods:
    the same accuracy, exactly, letter and cloze."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from finetune.modelload import load_model

    folder = write_mmlu(tmp_path / "mmlu", {"astronomy": QUESTIONS}, dev=True)
    rows = [{"question": q, "subject": "astronomy", "choices": list(c), "answer": "ABCD".index(a)}
            for q, c, a in QUESTIONS]
    (tmp_path / "astronomy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    model, tokenizer = load_model(embedded_model)
    tasks_dir = Path(lm_eval.__file__).parent / "tasks" / "mmlu"
    description = "The following are multiple choice questions (with answers) about astronomy.\n\n"
    for style, engine_yaml, options in (
            ("letter", "default/mmlu_astronomy.yaml", lambda c: [" A", " B", " C", " D"]),
            ("cloze", "continuation/mmlu_astronomy.yaml", lambda c: [" " + x for x in c])):
        ours = knowledge.score(model, tokenizer, knowledge.Plan([knowledge.read_folder(folder, style=style)]))
        ours = ours["mmlu"]
        (tmp_path / f"{style}.yaml").write_text(
            f"include: {tasks_dir / engine_yaml}\ntask: reference_{style}\ndataset_path: json\ndataset_name: null\n"
            f"dataset_kwargs:\n  data_files:\n    test: {tmp_path / 'astronomy.jsonl'}\n"
            f"    dev: {tmp_path / 'astronomy.jsonl'}\n")
        reference = lm_eval.simple_evaluate(
            "hf", model_args={"pretrained": str(embedded_model), "dtype": "float32", "device": "cpu"},
            tasks=[str(tmp_path / f"{style}.yaml")], task_manager=TaskManager(include_defaults=False),
            bootstrap_iters=0)["results"][f"reference_{style}"]
        if style == "letter":
            contexts = [description + q + "".join(f"\n{k}. {x}" for k, x in zip("ABCD", c, strict=True)) + "\nAnswer:"
                        for q, c, _ in QUESTIONS]
        else:
            contexts = [description.replace("multiple choice questions", "questions") + f"Question: {q}\nAnswer:"
                        for q, _, _ in QUESTIONS]
        picks = _hand_scored(model, tokenizer, [(ctx, options(c)) for ctx, (_, c, _) in zip(contexts, QUESTIONS,
                                                                                             strict=True)])
        by_hand = sum(p == "ABCD".index(a) for p, (_, _, a) in zip(picks, QUESTIONS, strict=True)) / len(QUESTIONS)
        assert ours["n"] == len(QUESTIONS) and ours["subjects"]["astronomy"]["n"] == len(QUESTIONS)
        assert ours["acc"] == reference["acc,none"] == by_hand, (style, ours, reference, picks)


# --------------------------------------------------------------------------------------------- layouts


def test_reads_the_three_layouts_and_hands_the_engine_its_field_names(tmp_path):
    mmlu = write_mmlu(tmp_path / "mmlu" / "data", {"astronomy": QUESTIONS[:2], "my_subject": QUESTIONS[2:3]},
                      dev=True)
    (mmlu / "dev" / "my_subject_dev.csv").unlink()
    (tmp_path / "ceval" / "val").mkdir(parents=True)
    (tmp_path / "ceval" / "val" / "accountant_val.csv").write_text(
        "id,question,A,B,C,D,answer,explanation\n0,一加一等于几？,1,2,3,4,B,\n1,\"逗号,在这里\",甲,乙,丙,丁,a,\n",
        encoding="utf-8")
    (tmp_path / "cmmlu" / "test").mkdir(parents=True)
    (tmp_path / "cmmlu" / "test" / "agronomy.csv").write_text(
        "\ufeff,Question,A,B,C,D,Answer\n0,水稻属于什么？,粮食作物,水果,花卉,蔬菜,A\n", encoding="utf-8")
    read = {name: knowledge.read_folder(tmp_path / name) for name in ("mmlu", "ceval", "cmmlu")}
    assert read["mmlu"].layout == "mmlu" and read["mmlu"].source.endswith("data")  # the data/ inside
    assert set(read["mmlu"].test) == {"astronomy", "my_subject"} and read["mmlu"].dev["astronomy"]
    assert read["ceval"].test["accountant"][1] == knowledge.Question("逗号,在这里", ("甲", "乙", "丙", "丁"), 0,
                                                                     "accountant")
    assert read["cmmlu"].test["agronomy"][0].answer == 0 and read["cmmlu"].size == 1
    configs = {name: knowledge.task_configs(bench) for name, bench in read.items()}
    ceval = configs["ceval"][0]
    # the engine's own prompt and its subject description (C-Eval's Chinese subject name)
    assert "注册会计师" in ceval["description"] and ceval["doc_to_text"].endswith("答案：")
    assert ceval["custom_dataset"]()["test"][0] == {"id": 0, "question": "一加一等于几？", "A": "1", "B": "2",
                                                   "C": "3", "D": "4", "answer": "B", "explanation": ""}
    cmmlu = configs["cmmlu"][0]
    assert cmmlu["custom_dataset"]()["test"][0]["Answer"] == "A" and "农学" in cmmlu["description"]
    mmlu = {c["task_alias"]: c for c in configs["mmlu"]}
    assert mmlu["astronomy"]["description"].startswith("The following are multiple choice questions (with answers) "
                                                       "about astronomy")
    assert mmlu["my_subject"]["description"].endswith("about my subject.\n\n")  # not one of the engine's subjects
    assert mmlu["astronomy"]["fewshot_split"] == "dev" and mmlu["my_subject"]["fewshot_split"] is None


def test_bad_benchmark_files_are_one_error_listing_each_row(tmp_path):
    folder = write_mmlu(tmp_path / "m", {"astronomy": QUESTIONS[:2]})
    with open(folder / "test" / "astronomy_test.csv", "a", encoding="utf-8") as fh:
        fh.write("only,three,columns\nq,a,b,c,d,E\n")
    with pytest.raises(DataError) as info:
        knowledge.read_folder(folder)
    assert info.value.problems == [(3, "has 3 columns, expected at least 6"),
                                   (4, "answer 'E' is not one of A, B, C, D")]
    (tmp_path / "other" / "stuff").mkdir(parents=True)
    with pytest.raises(InputError, match="not a benchmark folder in MMLU, C-Eval or CMMLU layout .it holds: stuff/"):
        knowledge.read_folder(tmp_path / "other")


def test_the_sample_is_balanced_and_never_in_the_training_prompts():
    from finetune.data.identity import TRAIN_QUESTIONS_EN, TRAIN_QUESTIONS_ZH
    from finetune.data.replay import GENERAL_PROMPTS_EN, GENERAL_PROMPTS_ZH

    benches = knowledge.sample_benchmarks()
    questions = [q for bench in benches for qs in bench.test.values() for q in qs]
    assert [b.size for b in benches] == [32, 32] and len({q.question for q in questions}) == 64
    assert all(sum(q.answer == i for q in questions) == 16 for i in range(4))  # no answer letter is favoured
    training = set(TRAIN_QUESTIONS_EN + TRAIN_QUESTIONS_ZH + GENERAL_PROMPTS_EN + GENERAL_PROMPTS_ZH)
    assert not {q.question for q in questions} & training
    assert [b.size for b in knowledge.sample_benchmarks(per_subject=4)] == [16, 16]


# --------------------------------------------------------------------------------------------- the verb


@pytest.fixture(scope="module")
def tiny_models(embedded_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_eval")
    return make_tiny_model("qwen3", root / "tuned", embedded_model), make_tiny_model("qwen3", root / "base",
                                                                                      embedded_model, seed=1)


def test_the_verb_writes_report_table_and_chart(tiny_models, tmp_path, capsys):
    tuned, base = tiny_models
    folder = write_mmlu(tmp_path / "bench", {"astronomy": QUESTIONS})
    out = tmp_path / "out"
    assert main(["eval", str(tuned), "--base", str(base), "--name", "星河", "--name-en", "Xinghe", "--tasks",
                 "identity", "leaks", "style", str(folder), "--out", str(out), "--batch-size", "8"]) == 0
    captured = capsys.readouterr()
    report = json.loads((out / "eval.json").read_text())
    assert report["tasks"] == ["identity", "leaks", "style", "mmlu"] and report["names"] == ["星河", "Xinghe"]
    for model in ("tuned", "base"):
        result = report["models"][model]
        assert result["identity"]["n"] == 30 and result["leaks"]["n"] == 30  # asked explicitly: the base too
        assert result["knowledge"]["mmlu"]["n"] == len(QUESTIONS) and result["knowledge"]["mmlu"]["style"] == "letter"
    assert "similarity_to_base" in report["models"]["tuned"]["style"]
    assert "metric" in captured.out and "mmlu: accuracy (letter, n=8)" in captured.out
    assert "tuned: 8/60 questions answered" in captured.err and "base: 60/60 questions answered" in captured.err
    assert (out / "eval.png").read_bytes()[:4] == b"\x89PNG"


def test_style_measures_show_a_collapse():
    from finetune.evaluate import diversity, similarity

    varied = ["Paris is the capital of France.", "Water boils at 100 degrees.", "熊猫主要吃竹子。"]
    assert diversity(["I am Xinghe's assistant."] * 3) == 0
    assert diversity(varied) > 0.6
    assert similarity("abc", "abc") == 1 and similarity("abc", "xyz") == 0


@pytest.mark.parametrize("argv, message", [
    (["--tasks", "no_such_task"], "Unknown task 'no_such_task': not a folder, not one of ours and not an "
                                  "lm-evaluation-harness task. Fix: use quick, identity, leaks, style, sample, a "
                                  "benchmark folder, or an lm-evaluation-harness task name"),
    (["--tasks", "./missing/ceval"], "The benchmark folder missing/ceval does not exist. Fix: check the path"),
    (["--tasks", "someone/some-dataset"], "'someone/some-dataset' is neither a folder nor a benchmark dataset id we "
                                          "know. Fix: use one of cais/mmlu"),
    (["--tasks", "cais/mmlu"], "Cannot load the data of the lm-evaluation-harness task 'mmlu' from the hub: the "
                               "machine is offline"),
    (["--tasks", "identity"], "identity and leaks need the assistant's name, and none is known for {model}. Fix: "
                              "pass it: --name"),
    (["--name", "x", "--tasks", "identity"], "{model} has no chat template (tokenizer_config.json has no "
                                             "'chat_template'), so "
                                             "it cannot be asked"),
])
def test_bad_tasks_and_models_are_one_line_errors(argv, message, tiny_models, tmp_path, capsys, monkeypatch):
    """Before any model is loaded (the chat template is checked on the tokenizer alone); nothing is written."""
    tuned, _ = tiny_models
    model = tmp_path / "no_template"
    if "chat template" in message:
        import shutil

        shutil.copytree(tuned, model)
        config = json.loads((model / "tokenizer_config.json").read_text())
        config.pop("chat_template", None)
        (model / "tokenizer_config.json").write_text(json.dumps(config))
        (model / "chat_template.jinja").unlink(missing_ok=True)
    else:
        model = tuned
    monkeypatch.chdir(tmp_path)
    assert main(["eval", str(model), "--out", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: " + message.format(tmp=tmp_path, model=model)), err
    assert not (tmp_path / "out").exists()


def _parquet(rows: list[dict]) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return buffer.getvalue()


def test_a_hub_dataset_id_is_downloaded_and_scored_by_the_engines_own_task(tiny_models, tmp_path):
    """`--tasks cais/mmlu` online: lm-evaluation-harness's own MMLU group downloads its 57 subjects with `datasets`
    from the hub (here the fake hub, speaking the same protocol, one question and one few-shot example a subject)."""
    import os
    import subprocess

    import yaml
    from fake_hf_hub import FakeHub

    task_dir = Path(knowledge._engine()[0].__file__).parent / "tasks" / "mmlu" / "default"
    subjects = sorted(yaml.safe_load(p.read_text())["dataset_name"] for p in task_dir.glob("mmlu_*.yaml"))
    assert len(subjects) == 57
    files, configs = {}, []
    for subject in subjects:
        for split in ("test", "dev"):
            row = {"question": f"{subject} {split}: which letter is second?", "subject": subject,
                   "choices": ["a", "b", "c", "d"], "answer": 1}
            files[f"{subject}/{split}-00000-of-00001.parquet"] = _parquet([row])
        configs.append({"config_name": subject, "data_files": [{"split": s, "path": f"{subject}/{s}-*"}
                                                                for s in ("test", "dev")]})
    files["README.md"] = f"---\n{yaml.safe_dump({'configs': configs})}---\n# MMLU (a test copy)\n".encode()
    tuned, _ = tiny_models
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")}
    with FakeHub() as hub:
        hub.seed("cais/mmlu", files, repo_type="dataset")
        env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"))
        done = subprocess.run([sys.executable, "-m", "finetune", "eval", str(tuned), "--tasks", "cais/mmlu",
                               "--fewshot", "1", "--out", str(out)], env=env, capture_output=True, text=True,
                              timeout=600)
        downloaded = {p.split("/resolve/")[1].split("/", 1)[1] for m, p in hub.requests
                      if m == "GET" and "/resolve/" in p and p.endswith(".parquet")}
    assert done.returncode == 0, done.stderr[-2000:]
    assert downloaded == {p for p in files if p.endswith(".parquet")}
    report = json.loads((out / "eval.json").read_text())
    assert report["tasks"] == ["mmlu"] and report["settings"]["fewshot"] == 1
    mmlu = report["models"]["tuned"]["knowledge"]["mmlu"]
    assert mmlu["n"] == 57 and len(mmlu["subjects"]) == 57, mmlu
    assert {s["n"] for s in mmlu["subjects"].values()} == {1}
    assert mmlu["acc"] == pytest.approx(sum(s["acc"] for s in mmlu["subjects"].values()) / 57)
