# Two commands for a newcomer: `make demo` and `make test`. Both create (or reuse) a virtual
# environment keyed by the hash of requirements.txt, so a fresh clone reuses an environment that
# already satisfies the requirements instead of installing several GB again.
PYTHON ?= python3
REQ_HASH := $(shell sha256sum requirements.txt | cut -c1-12)
VENV ?= $(HOME)/.cache/instagan-alphagan/venv-$(REQ_HASH)
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo demo-matting test venv clean-venv

venv: $(STAMP)

$(STAMP): requirements.txt
	@mkdir -p $(dir $(VENV))
	$(PYTHON) -m venv $(VENV)
	# visdom builds from source and needs setuptools<81 (pkg_resources) in its build environment.
	$(PY) -m pip install --quiet 'setuptools<81' wheel
	$(PY) -m pip install --no-build-isolation -r requirements.txt
	touch $(STAMP)

test: venv
	$(PY) -m pytest -q tests

demo: venv
	$(PY) scripts/demo.py

demo-matting: venv
	$(PY) scripts/demo.py --task matting

clean-venv:
	rm -rf $(VENV)
