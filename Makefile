# `make demo` and `make test` each set up .venv on a fresh machine, then run.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PROMPT  ?= a red circle moving right on a gray background

.PHONY: demo test lint format venv clean bench sysdeps

venv: $(STAMP)

# torch is pinned and installed first: its CPU build lies on disk here; unpinned it pulls CUDA wheels.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q torch==2.13.0
	$(VPY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(VPY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Debian's tesseract-ocr for the OCR filter; installed when we are root, else its tests skip and say why.
sysdeps:
	@command -v tesseract >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && apt-get install -y -qq tesseract-ocr) >/dev/null 2>&1 \
	      || echo "could not install tesseract-ocr: OCR tests will be skipped"; \
	  else echo "tesseract-ocr missing and not root: OCR tests will be skipped"; fi; }

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint sysdeps
	$(VPY) -m pytest -q tests

demo: $(STAMP)
	$(VPY) predict_t2v.py --prompt "$(PROMPT)" --output-dir samples

bench: $(STAMP)
	$(VPY) benchmarks/bench_transformer.py

clean:
	rm -rf $(VENV) .pytest_cache
