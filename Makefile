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

.PHONY: setup test test-fast lint demo installer constraints clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[train,app,dev]'
	touch $(STAMP)

lint: setup
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

demo: setup
	$(BIN)/adaptor-train pretrain --config configs/phantoms-tiny.yaml --out runs/demo

installer: setup
	$(BIN)/pyinstaller --noconfirm --clean build_installer.spec

# Rewrite constraints.txt from what is installed in .venv (after a deliberate upgrade).
constraints: setup
	{ sed -n '1,/^# Regenerate/p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | sed 's/+cpu$$//'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf build dist runs .pytest_cache
