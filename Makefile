# dualscope: `make demo` and `make test` work on a fresh machine (they create .venv and install).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck imports docs pytest browser bench fuzz clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,formats,nion,dask,docs]' 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
	$(PY) -c "import engine, instruments, simulators, torch, botorch, zarr, zmq, skimage, nion.instrumentation, nion.usim_device, distributed, mkdocs"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dualscope demo

lint: $(STAMP)
	$(VENV)/bin/ruff check engine instruments simulators tests benchmarks examples
	$(VENV)/bin/ruff format --check engine instruments simulators tests benchmarks examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy engine instruments simulators

imports: $(STAMP)
	$(VENV)/bin/lint-imports

# the documentation site in build/site; strict: a broken link, anchor or docstring fails the build
docs: $(STAMP)
	mkdir -p build
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build > build/mkdocs.log 2>&1 || { cat build/mkdocs.log; exit 1; }

# the live view's browser test drives Debian's chromium through its chromedriver (never a downloaded browser);
# installed here when missing and this runs as root (CI), otherwise the test says what to install
browser:
	@mkdir -p build; test -x /usr/bin/chromedriver -a -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y -q chromium chromium-driver > build/apt.log 2>&1 \
	    || { apt-get update -q >> build/apt.log 2>&1 && apt-get install -y -q chromium chromium-driver >> build/apt.log 2>&1; } \
	    || { cat build/apt.log; exit 1; }; \
	  else echo "make: the live view's browser test needs: sudo apt-get install chromium chromium-driver"; fi; }

pytest: $(STAMP) browser
	$(PY) -m pytest -n auto

test: lint typecheck imports docs pytest

bench: $(STAMP)
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis runs

# many more hypothesis cases against the wire format and a live server than `make test` runs,
# then coverage-guided atheris runs against the decoder (corpus and dictionary in build/)
fuzz: $(STAMP)
	DUALSCOPE_FUZZ_EXAMPLES=20000 $(PY) -m pytest -q tests/instruments/test_fuzz.py --hypothesis-show-statistics
	DUALSCOPE_POWER_CUTS=all $(PY) -m pytest -q tests/engine/storage/test_power_cut.py
	$(PY) -m pip install -q -e '.[fuzz]'
	$(PY) tests/instruments/fuzz_wire_atheris.py -atheris_runs=3000000 build/fuzz-corpus
