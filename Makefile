# Two commands do everything (see README.md):
#   make reproduce   set up .venv if needed, then run the whole chain on the toy profile
#   make test        set up .venv if needed, then run the test suite (what .ci/run calls)
# Set-up is skipped when the stamp for the current requirements.txt/pyproject.toml exists.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
# Some machines set PYTHONDONTWRITEBYTECODE; then every process (each notebook kernel, each
# training child) would compile torch and transformers again. Python's default, bytecode written
# once into .venv and __pycache__/ (git ignores both), is what the commands below run with.
unexport PYTHONDONTWRITEBYTECODE
VENV   := .venv
PY     := $(VENV)/bin/python
PROFILE ?= toy
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: setup reproduce test notebooks check figures preflight gpu-deps-check clean-runs

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@$(PY) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"need Python 3.11, {sys.executable} is {sys.version.split()[0]}"'
	@# --no-compile: Python writes a module's bytecode the first time it is imported (the
	@# `unexport` above), so set-up does not compile the ~17,000 installed files nobody imports.
	$(PY) -m pip install --quiet --no-compile -r requirements.txt
	@# requirements.txt pins setuptools, so the editable install needs no isolated build environment.
	$(PY) -m pip install --quiet --no-compile --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name morelib --display-name "Python (morelib)"
	@rm -f $(VENV)/.installed-*
	@touch $@

reproduce: setup
	$(PY) -m morelib.run --profile $(PROFILE)

# Two pytest-xdist workers: the toy chain test (collected first) runs on one while the other takes
# the rest, stealing from the first's queue when it runs dry. TEST_WORKERS=0 runs them in order.
TEST_WORKERS ?= 2
test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

# Each notebook is a pair: notebooks/NN_name.py (jupytext percent format, the source to review)
# and NN_name.ipynb (what papermill runs); notebooks/jupytext.toml pairs them, and JupyterLab
# keeps them in sync on save. These targets sync them from the shell: the file of a pair edited
# last wins, then the .ipynb files lose their outputs (none are ever committed). Cell ids are
# kept, so a sync with nothing edited changes nothing.
notebooks: setup
	@$(MAKE) --no-print-directory sync-notebooks

.PHONY: sync-notebooks
sync-notebooks:
	$(VENV)/bin/jupytext --sync notebooks/[0-9][0-9]_*.py
	$(VENV)/bin/jupyter nbconvert --clear-output --inplace --log-level WARN notebooks/[0-9][0-9]_*.ipynb

# Build every section's settings from a profile without running anything.
check: setup
	$(PY) -m morelib.run --profile $(PROFILE) --check

# Copy the figures of the last run into figures/ (a run itself never touches tracked files).
figures: setup
	$(PY) -m morelib.run --profile $(PROFILE) --only none --copy-figures

# Count the tokens every stage will see against its limits (sequence lengths, vLLM context).
preflight: setup
	$(PY) -m morelib.preflight --profile $(PROFILE)

# Ask pip's resolver whether the GPU stack (requirements-gpu.txt = requirements.txt + vLLM +
# DeepSpeed) installs together; nothing is installed.
gpu-deps-check:
	$(PYTHON) -m pip install --dry-run --ignore-installed --quiet --report /dev/null -r requirements-gpu.txt \
		&& echo "requirements-gpu.txt resolves"

clean-runs:
	rm -rf runs/
