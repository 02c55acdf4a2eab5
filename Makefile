# Two commands: `make demo` (set up, then train the default model) and `make test` (set up, then run the suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-slow bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: venv
	$(BIN)/nqs-train

# One OpenMP thread per process: PySCF's FCI slows down 30x when its two threads compete with another busy
# process. One pytest worker per core instead (pytest-xdist; idle workers take queued tests from busy ones:
# worksteal, 130 s against 142 s in one clean-clone pair, session 31); TEST_WORKERS=0 runs the suite in this process.
TEST_WORKERS ?= auto
test: venv
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

test-slow: venv
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m slow

clean:
	rm -rf $(VENV) build *.egg-info
