# The two commands that matter: `make train` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FASHION_MNIST := /usr/share/datasets/fashion-mnist
# torch wheels: pinned to the releases these machines carry locally (a CUDA build that also runs on CPU).
TORCH := $(if $(filter aarch64,$(shell uname -m)),torch==2.9.1 torchvision==0.24.1,torch==2.14.1 torchvision==0.29.1)

.PHONY: setup data train test lint bench docs

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Debian ships Fashion-MNIST as a package; install it when we can (root), otherwise training falls back to a download.
data:
	@if [ ! -d $(FASHION_MNIST) ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
				|| echo "warning: apt could not install dataset-fashion-mnist; Fashion-MNIST will be downloaded"; \
		else \
			echo "note: $(FASHION_MNIST) not found and not root; Fashion-MNIST will be downloaded on first use"; \
		fi; \
	fi

# The default job on a GPU; without one, the same job on a 2,048-image subset so kNN shows up within minutes.
train: setup data
	@if $(PY) -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then \
		$(PY) train.py fit --config configs/simclr.yaml $(ARGS); \
	else \
		echo "No GPU found: training on a Fashion-MNIST subset (configs/trainer/cpu.yaml). On a GPU, make train runs the full job."; \
		$(PY) train.py fit --config configs/simclr.yaml --config configs/trainer/cpu.yaml $(ARGS); \
	fi

# One pytest-xdist worker per core; a worker steals queued tests from a busy one, so the long tests do not finish last.
test: setup data
	$(PY) -m pytest -q -n auto --dist worksteal tests

lint: setup
	$(VENV)/bin/ruff check selfsup tests bench train.py
	$(VENV)/bin/ruff format --check selfsup tests bench train.py

bench: setup data
	$(PY) bench/throughput.py $(ARGS)

# The documentation site, into site/ (open site/index.html); warnings are errors, as in CI.
docs: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

$(VENV)/.docs-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev,docs]'
	touch $@
