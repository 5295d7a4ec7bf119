# Two commands do all set-up on a fresh machine: `make demo` (the main job) and `make test`.
# The virtual environment lives outside the clone, keyed by the dependency list, so repeated runs
# (and fresh clones on the same machine) reuse it instead of reinstalling.
SHELL := /bin/bash
PYTHON ?= python3
CACHE_ROOT ?= $(if $(XDG_CACHE_HOME),$(XDG_CACHE_HOME),$(HOME)/.cache)/glassformer
VENV_KEY := $(shell cat pyproject.toml .ci/setup-venv.sh | sha256sum | cut -c1-12)
VENV ?= $(CACHE_ROOT)/venv-$(VENV_KEY)
# No network at run time: the hub is never contacted, W&B stays offline, caches stay out of $HOME.
export HF_DATASETS_OFFLINE := 1
export HF_HUB_OFFLINE := 1
export HF_HOME ?= $(CACHE_ROOT)/hf
export WANDB_MODE ?= offline
export WANDB_DIR ?= $(CACHE_ROOT)/wandb
export TORCHINDUCTOR_CACHE_DIR ?= $(CACHE_ROOT)/inductor
export TRITON_CACHE_DIR ?= $(CACHE_ROOT)/triton
export GLASSFORMER_CACHE ?= $(CACHE_ROOT)/data
RUN := $(VENV)/bin/glassformer
DEMO_DIR ?= runs/demo

.PHONY: venv demo paper test test-slow test-gpu lint clean

venv:
	@VENV="$(VENV)" PYTHON="$(PYTHON)" bash .ci/setup-venv.sh

# The main job: train a dense and a weight-sparse model (the paper recipes at 1200 steps) on the default corpus,
# find their node-level circuits and write the trade-off report (DEMO_DIR/report/index.html); it prints the
# verdict and the report's path. A rerun reuses what is finished. Two worker processes of one torch thread each:
# the two models train side by side, a core each (on a machine shared with other jobs, extra threads spinning
# against them made steps up to 10x slower: the README's sweep section).
demo: venv
	$(RUN) sweep --preset quick --out $(DEMO_DIR) --jobs 2 --threads 1

# The comparison to publish: the paper preset, three seeds of four recipes, on two worker
# processes. About 2 h 40 min on a 2-core CPU (docs/results/paper.md); a rerun resumes where it stopped.
PAPER_DIR ?= runs/paper
paper: venv
	$(RUN) sweep --preset paper --out $(PAPER_DIR) --jobs 2 --threads 1 --progress false

test: venv
	$(VENV)/bin/python -m pytest -q -n 2 $(PYTEST_ARGS)

test-slow: venv
	$(VENV)/bin/python -m pytest -q -m slow $(PYTEST_ARGS)

test-gpu: venv
	$(VENV)/bin/python -m pytest -q -m gpu $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf runs .pytest_cache
