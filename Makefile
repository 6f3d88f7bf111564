# `make demo` and `make test` each set up .venv on a fresh machine, then run.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PROMPT  ?= a red circle moving right on a gray background

.PHONY: demo test lint format venv clean bench sysdeps check-install

venv: $(STAMP)

# torch is pinned and installed first: its CPU build lies on disk here; unpinned it pulls CUDA wheels.
$(STAMP): requirements.txt requirements-train.txt requirements-preprocess.txt requirements-ui.txt \
          requirements-dev.txt pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q torch==2.13.0
	$(VPY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(VPY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Debian packages some tests need: tesseract-ocr (OCR filter) and chromium (the browser test of the web UI).
# Installed when we are root; otherwise those tests skip and say why.
SYSPKGS := tesseract-ocr:tesseract chromium:chromium
sysdeps:
	@missing=""; for p in $(SYSPKGS); do command -v $${p#*:} >/dev/null 2>&1 || missing="$$missing $${p%%:*}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && apt-get install -y -qq $$missing) >/dev/null 2>&1 \
	      || echo "could not install$$missing: their tests will be skipped"; \
	  else echo "missing$$missing and not root: their tests will be skipped"; fi; fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint sysdeps
	$(VPY) -m pytest -q tests

demo: $(STAMP)
	$(VPY) predict_t2v.py --prompt "$(PROMPT)" --guidance-scale 4 --output-dir samples  # the demo model's CFG

# A user's install: a fresh venv, torch first, then `pip install .` (inference only); generates with the demo.
check-install:
	rm -rf /tmp/easyanimate-install && $(PY) -m venv /tmp/easyanimate-install
	/tmp/easyanimate-install/bin/pip install -q torch==2.13.0
	/tmp/easyanimate-install/bin/pip install -q . && rm -rf build  # setuptools builds in the tree
	cd /tmp && /tmp/easyanimate-install/bin/python -c "import easyanimate, torch; \
	from easyanimate.pipeline.loading import load_pipeline; \
	pipe = load_pipeline('$(CURDIR)/models/Diffusion_Transformer/EasyAnimate-demo'); \
	v = pipe('$(PROMPT)', num_inference_steps=5, generator=torch.Generator().manual_seed(0)).frames; \
	print(easyanimate.__file__, v.shape)"

bench: $(STAMP)
	$(VPY) benchmarks/bench_transformer.py

clean:
	rm -rf $(VENV) .pytest_cache
