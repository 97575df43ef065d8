# Set-up and the two main commands. `make run` and `make test` install what they need first.
PYTHON ?= python3.11
VENV := .venv
# The CPU build on machines without a GPU; on a GPU machine e.g. TORCH_SPEC="torch==2.14.1".
TORCH_SPEC ?= torch==2.13.0

TRAIN_VENV := .venv-train

.PHONY: setup train-env run test ui clean-state

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet "$(TORCH_SPEC)"
	$(VENV)/bin/pip install --quiet -e ".[test]"
	touch $@

setup: $(VENV)/.installed

# LLaMA-Factory in its own environment (see scripts/setup_training_env.sh).
$(TRAIN_VENV)/.installed: scripts/setup_training_env.sh
	PYTHON=$(PYTHON) TORCH_SPEC="$(TORCH_SPEC)" bash scripts/setup_training_env.sh $(TRAIN_VENV)
	touch $@

train-env: $(TRAIN_VENV)/.installed

# bubblewrap isolates HumanEval's model-written programs (installed when root; see scripts/install_test_tools.sh).
run: setup train-env
	bash scripts/install_test_tools.sh bubblewrap
	$(VENV)/bin/madef run

# Style first (ruff lint + format check, configured in pyproject.toml): a lint error fails the test command.
# Then the suite on both cores, one test module per worker and one math thread per worker: two workers each
# running torch on two threads over-subscribe the cores (measured: two CPU evaluations 83 s at once with two
# threads each, 29 s with one); the modules marked `alone` run after, by themselves.
test: setup train-env
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(VENV)/bin/pytest -n 2 --dist loadfile --no-loadscope-reorder -m "not alone"
	$(VENV)/bin/pytest -m alone

ui: setup
	$(VENV)/bin/madef ui

clean-state:
	rm -rf state
