# Two commands for a newcomer: `make demo` and `make test`. Both create (or reuse) a virtual
# environment keyed by the hash of requirements.txt, so a fresh clone reuses an environment that
# already satisfies the requirements instead of installing several GB again.
PYTHON ?= python3
REQ_HASH := $(shell sha256sum requirements.txt | cut -c1-12)
VENV ?= $(HOME)/.cache/instagan-alphagan/venv-$(REQ_HASH)
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo demo-matting test venv browser clean-venv

venv: $(STAMP)

$(STAMP): requirements.txt
	@mkdir -p $(dir $(VENV))
	$(PYTHON) -m venv $(VENV)
	# visdom builds from source and needs setuptools<81 (pkg_resources) in its build environment.
	$(PY) -m pip install --quiet 'setuptools<81' wheel
	$(PY) -m pip install --no-build-isolation -r requirements.txt
	touch $(STAMP)

# The result-page tests render in Debian's Chromium (no browser download); install it when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "warning: could not install chromium (needs root and apt); browser tests will be skipped"; }

test: venv browser
	$(PY) -m pytest -q tests

demo: venv
	$(PY) scripts/demo.py

demo-matting: venv
	$(PY) scripts/demo_matting.py

clean-venv:
	rm -rf $(VENV)
