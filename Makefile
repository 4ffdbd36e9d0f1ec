# Set-up and everyday commands. `make demo` and `make test` are the README's two commands.
#   DEVICE=auto|cpu|cuda   which torch build to install (auto: cuda when nvidia-smi works)
PY ?= python3
VENV ?= .venv
DEVICE ?= auto
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
CPU_INDEX := https://download.pytorch.org/whl/cpu

ifeq ($(DEVICE),auto)
  DEVICE := $(shell nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)
endif

.PHONY: install demo test test-slow lint clean

install: $(VENV)/.installed-$(DEVICE)

$(VENV)/.installed-$(DEVICE): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
ifeq ($(DEVICE),cuda)
	$(BIN)/pip install -q "torch==$(TORCH_VERSION)"
else
	# the CPU build: from a local wheel cache or index if one has it, else from PyTorch's CPU index
	$(BIN)/pip install -q "torch==$(TORCH_VERSION)+cpu" 2>/dev/null \
		|| $(BIN)/pip install -q "torch==$(TORCH_VERSION)+cpu" --extra-index-url $(CPU_INDEX)
endif
	$(BIN)/pip install -q -e ".[dev]"
	rm -f $(VENV)/.installed-* && touch $@

demo: install
	$(BIN)/harness eval --model mini --benchmark mini
	@echo "tables above; the run is stored in results/flow-opd.duckdb (harness leaderboard, harness report RUN)"

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q --slow

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports

clean:
	rm -rf $(VENV) out .pytest_cache
