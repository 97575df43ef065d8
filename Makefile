# Set-up and the two main commands. `make run` and `make test` install what they need first.
PYTHON ?= python3.11
VENV := .venv
# The CPU build on machines without a GPU; on a GPU machine e.g. TORCH_SPEC="torch==2.14.1".
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup run test ui clean-state

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet "$(TORCH_SPEC)"
	$(VENV)/bin/pip install --quiet -e ".[test]"
	touch $@

setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/madef run

test: setup
	$(VENV)/bin/pytest

ui: setup
	$(VENV)/bin/madef ui

clean-state:
	rm -rf state
