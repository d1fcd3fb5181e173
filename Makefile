# dropwarden developer entry points. `make test` on a fresh machine sets everything up and runs the suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup setup-run system-deps system-deps-run llama-server test lint format run deb bench-regex bench-ocr clean

setup: system-deps $(VENV)/.installed llama-server

# What the embedded default needs (regex, OCR with Tesseract, documents): no torch, no llama.cpp build.
# A checkout that already ran `make setup` keeps its full environment.
setup-run: system-deps-run
	@if [ -f $(VENV)/.installed ]; then :; else $(MAKE) --no-print-directory $(VENV)/.installed-run; fi

# llama.cpp's llama-server (CPU) for tests/test_vision_llama_server.py: built once from the pinned
# llama-cpp-python sdist into ~/.cache/dropwarden/llama-server-<version>/ (10-20 minutes on two cores).
llama-server: $(VENV)/.installed
	@PYTHON=$(BIN)/python JOBS=$${JOBS:-$$(nproc)} sh packaging/dev/build-llama-server.sh >/dev/null

# System packages (Debian): installed only when running as root with apt-get available.
system-deps:
	@sh packaging/dev/system-deps.sh

system-deps-run:
	@sh packaging/dev/system-deps.sh run

# torch before the mangaocr extra: 2.13.0 is a CPU build on this project's machines (~0.9 GB);
# an unpinned torch would pull a CUDA build of several GB.
$(VENV)/.installed: pyproject.toml setup.py plugins/dropwarden_regex/_textpos.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,systemd,llamacpp,mangaocr]'
	touch $@

$(VENV)/.installed-run: pyproject.toml setup.py plugins/dropwarden_regex/_textpos.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The suite includes booting the unit under a real systemd in an nspawn container (root only; it
# builds a Debian tree with debootstrap once, in /var/tmp). DROPWARDEN_TEST_SYSTEMD=0 leaves it out.
test: lint
	DROPWARDEN_TEST_SYSTEMD=$${DROPWARDEN_TEST_SYSTEMD:-1} $(BIN)/pytest

# The daemon on the embedded defaults, watching demo/drop/inbox inside this checkout (Ctrl-C stops it).
run: setup-run demo/dropwarden.toml
	$(BIN)/dropwarden run --config demo/dropwarden.toml

demo/dropwarden.toml: etc/dropwarden/demo.toml.in
	mkdir -p demo
	sed 's#@ROOT@#$(CURDIR)/demo#g' $< > $@

# The Debian package dropwarden_<version>_<arch>.deb in this checkout: a venv under /opt/dropwarden made by
# /usr/bin/python3 (the package depends on that python3.X: build on the release you install on), the unit,
# sysusers, tmpfiles, logrotate, the configuration, man page and completions; then lintian on it.
deb: system-deps
	/usr/bin/python3 packaging/deb/build.py --out $(CURDIR)
	@if command -v lintian >/dev/null; then lintian --fail-on error,warning $(CURDIR)/dropwarden_*.deb; fi

bench-regex: setup
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/regex_bench.py

bench-ocr: setup
	$(BIN)/python bench/ocr_bench.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache demo dropwarden_*.deb
