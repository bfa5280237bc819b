# Two commands do everything (see README.md):
#   make reproduce   set up .venv if needed, then run the whole chain on the toy profile
#   make test        set up .venv if needed, then run the test suite (what .ci/run calls)
# Set-up is skipped when the stamp for the current requirements.txt/pyproject.toml exists.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PROFILE ?= toy
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: setup reproduce test notebooks check clean-runs

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@$(PY) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"need Python 3.11, {sys.executable} is {sys.version.split()[0]}"'
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m ipykernel install --user --name morelib --display-name "Python (morelib)"
	@rm -f $(VENV)/.installed-*
	@touch $@

reproduce: setup
	$(PY) -m morelib.run --profile $(PROFILE)

test: setup
	$(PY) -m pytest -q

# Regenerate notebooks/ from their builders in tools/notebooks/ (no outputs are ever committed).
notebooks: setup
	@for builder in tools/notebooks/[0-9][0-9]_*.py; do $(PY) $$builder; done

# Check a profile against the notebooks' parameters cells without running anything.
check: setup
	$(PY) -m morelib.run --profile $(PROFILE) --check

clean-runs:
	rm -rf runs/
