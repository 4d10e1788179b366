# Two commands do everything on a machine with Python 3.10+:
#   make quickstart   offline DQN on the embedded MinAtar dataset (~3 min on 2 CPU cores)
#   make test         the test suite
# Both create a project-local virtual environment (.venv) on first use and reuse it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
# Reinstalled whenever setup.py changes.
STAMP  := $(VENV)/.installed-$(shell cksum setup.py | cut -d' ' -f1)
RUN_DIR ?= runs/quickstart

.PHONY: install quickstart test benchmark clean

install: $(STAMP)

$(STAMP): setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,cluster]"
	@rm -f $(VENV)/.installed-*
	@touch $@

quickstart: $(STAMP)
	$(BIN)/python train.py --base_dir=$(RUN_DIR) --gin_files=gin_configs/quickstart.gin

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --durations=15 tests

benchmark: $(STAMP)
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf $(VENV) runs
