# CXR Adaptor: `make demo` runs the main job on the embedded default, `make test` runs the suite.
# Both create .venv/ first when it is missing (`make setup`).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export QT_QPA_PLATFORM ?= offscreen
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test test-fast lint demo demo-assets installer notices constraints clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[train,app,dev]'
	touch $(STAMP)

LINT_DIRS := app core_model training_cli tests benchmarks tools

lint: setup
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check $(LINT_DIRS)
	$(BIN)/mypy
	$(BIN)/python tools/third_party_notices.py --check

test: lint
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# The app on a fresh temporary library with the demo studies and the demo model. Without a
# display it prints the demo model's analysis of each study and writes demo-screenshot.png.
demo: setup
	$(BIN)/adaptor-review --demo

# Rebuild the demo model and studies from nothing (synthetic phantoms, CPU, a few minutes) and
# refresh assets/demo.
demo-assets: setup
	$(BIN)/adaptor-train demo --out runs/demo --assets assets/demo

installer: setup
	$(BIN)/pyinstaller --noconfirm --clean build_installer.spec
	@du -sh dist/adaptor-review

notices: setup
	$(BIN)/python tools/third_party_notices.py

# Rewrite constraints.txt from what is installed in .venv (after a deliberate upgrade).
constraints: setup
	{ sed -n '1,/^# Regenerate/p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | sed 's/+cpu$$//'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf build dist runs .pytest_cache
