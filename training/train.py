"""``train``: an embedding network with the COCO loss (or the triplet baseline) on prepared crops.

The method: RMSProp, L2 weight decay 1e-3, mini-batches of 100, a learning-rate schedule
(linear warm-up, then cosine decay to zero), augmentation by rotation, crop, hue, saturation
and flip. Everything here is Keras 3 with ``keras.ops``, so it runs under the TensorFlow, JAX
or PyTorch backend (``KERAS_BACKEND``); the run folder it writes is the same under all three.

A run folder holds:

- ``config.json`` and ``split.json`` (the people trained on, the people held apart and, when
  fine-tuning with early stopping, the validation people that choose when to stop);
- ``embedder.weights.h5`` and ``model.json``: the embedding network, without the loss's head
  (backend-neutral Keras weights; ``export`` turns them into TFLite);
- ``checkpoints/``: the embedder every ``checkpoint_every`` epochs; ``backup/``: the whole
  training state each epoch, so running the same command again resumes an interrupted run;
- ``training.csv`` (loss, learning rate and held-out verification per epoch; a fine-tuning
  logs its centre warm-up in ``training-warmup.csv``), ``tensorboard/`` (when TensorFlow is
  installed) and ``training.json`` (the summary).

Fine-tuning a good start model (``init_from`` with any of the staged settings: see
``fine_tune``) trains in two stages and keeps the best embedder on the validation people.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import keras
import numpy as np

from device.errors import FacegateError
from training.backbones import BackboneSpec, build_backbone
from training.data import (
    Augmentation,
    CropSet,
    FaceBatches,
    save_split,
    split_people,
    split_validation,
)
from training.losses import (
    DEFAULT_ALPHA_EPSILON,
    DEFAULT_TRIPLET_MARGIN,
    CocoLogits,
    TripletLoss,
    coco_alpha_lower_bound,
)

LOSSES = ("coco", "triplet")


@dataclass
class TrainConfig:
    data: str = "var/train/lfw-a"  # a prepared folder (``prepare --out``)
    out: str = "var/train/runs/mobilefacenet-coco"
    backbone: str = "mobilefacenet"
    width: float = 1.0
    embedding_dim: int = 128
    loss: str = "coco"
    alpha: float | None = None  # COCO scale; None: the lower bound for the number of people
    alpha_epsilon: float = DEFAULT_ALPHA_EPSILON
    triplet_margin: float = DEFAULT_TRIPLET_MARGIN
    people_per_batch: int = 25  # triplet batches: P people x (batch_size / P) images
    epochs: int = 40
    batch_size: int = 100
    steps_per_epoch: int | None = None  # None: one pass over the training crops
    learning_rate: float = 0.05
    warmup_epochs: float = 1.0
    weight_decay: float = 1e-3
    holdout_share: float = 0.3  # people held apart for evaluation, never trained on
    seed: int = 0
    init_from: str | None = None  # "sface", a run folder or a .weights.h5 to start from
    # Fine-tuning (see ``fine_tune``): any of these set turns a run into warm-up + tuning.
    validation_share: float = 0.0  # of the training people, set aside for early stopping
    warmup_centres_epochs: int = 0  # COCO: epochs training the new class centres only
    warmup_learning_rate: float = 0.05  # the centres' rate in that warm-up
    train_top_units: int | None = None  # then train only the top N units (None: all)
    freeze_batchnorm: bool = False  # keep the start model's batch-norm statistics
    early_stopping_patience: int = 0  # epochs without a better validation FNIR; 0: never
    decay_towards: str = "zero"  # weight decay pulls to zero, or to the start model ("start")
    time_budget_minutes: float | None = None  # stop cleanly after this long
    mixed_precision: bool = False
    gpus: int | None = None  # None: every GPU there is; 0: the CPU
    threads: int | None = None  # CPU threads for the backend (None: all)
    workers: int = 2  # threads decoding and augmenting batches
    eval_every: int = 5  # held-out verification every this many epochs (0: never)
    checkpoint_every: int = 5
    augmentation: dict = field(default_factory=lambda: asdict(Augmentation()))

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise FacegateError(f"unknown train setting(s): {', '.join(unknown)}")
        return cls(**values)

    def check(self) -> None:
        if self.loss not in LOSSES:
            raise FacegateError(f"loss must be one of {', '.join(LOSSES)}, not {self.loss!r}")
        if self.loss == "triplet" and self.batch_size % self.people_per_batch:
            raise FacegateError("batch_size must be a multiple of people_per_batch")
        for name in ("epochs", "batch_size", "embedding_dim"):
            if getattr(self, name) < 1:
                raise FacegateError(f"{name} must be at least 1")
        if self.early_stopping_patience and not self.validation_share:
            raise FacegateError("early stopping needs validation people: set validation_share")
        if self.decay_towards not in ("zero", "start"):
            raise FacegateError("decay_towards must be zero or start")
        if self.decay_towards == "start" and not self.init_from:
            raise FacegateError("decay_towards = start needs a start model (init_from)")
        if self.warmup_centres_epochs >= self.epochs:
            raise FacegateError("warmup_centres_epochs must be fewer than epochs")

    @property
    def fine_tuning(self) -> bool:
        """Staged training from a start model rather than one schedule from scratch."""
        return bool(self.validation_share or self.warmup_centres_epochs
                    or self.train_top_units is not None or self.freeze_batchnorm
                    or self.early_stopping_patience or self.decay_towards == "start")


def backend_name() -> str:
    return keras.backend.backend()


# --- the models -----------------------------------------------------------------------------

def build_models(config: TrainConfig, num_classes: int) -> tuple[keras.Model, keras.Model, dict]:
    """(embedding network, training network, loss facts). The training network ends in the
    COCO logits, or in the embedding itself for the triplet loss."""
    spec = BackboneSpec(config.backbone, config.width, config.embedding_dim, config.weight_decay)
    embedder = build_backbone(spec)
    if config.loss == "triplet":
        return embedder, embedder, {"loss": "triplet", "margin": config.triplet_margin}
    alpha = config.alpha or coco_alpha_lower_bound(num_classes, config.alpha_epsilon)
    logits = CocoLogits(num_classes, alpha, name="coco_logits")(embedder.output)
    trainer = keras.Model(embedder.input, logits, name=f"{spec.name}_coco")
    return embedder, trainer, {"loss": "coco", "alpha": round(alpha, 4),
                               "alpha_from": "given" if config.alpha else
                               f"lower bound for {num_classes} people, "
                               f"epsilon {config.alpha_epsilon}"}


def compile_for_training(trainer: keras.Model, config: TrainConfig, total_steps: int, *,
                         learning_rate: float | None = None, epochs: int | None = None) -> None:
    """RMSProp with linear warm-up and cosine decay over ``total_steps`` (``epochs`` of them:
    the whole run by default; one stage of a fine-tuning)."""
    learning_rate = config.learning_rate if learning_rate is None else learning_rate
    warmup = int(config.warmup_epochs * total_steps / (epochs or config.epochs))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=learning_rate / 100, decay_steps=max(1, total_steps - warmup),
        warmup_target=learning_rate, warmup_steps=warmup)
    # RMSProp as TF-slim and FaceNet set it up: momentum 0.9 and epsilon 1.0. The large
    # epsilon bounds the step when the running mean square is still near zero early on.
    optimizer = keras.optimizers.RMSprop(schedule, rho=0.9, momentum=0.9, epsilon=1.0)
    if config.loss == "coco":
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    else:
        loss, metrics = TripletLoss(config.triplet_margin), []
    trainer.compile(optimizer=optimizer, loss=loss, metrics=metrics)


def load_embedder_weights(embedder: keras.Model, source: str | Path) -> None:
    """Weights of a previous run (its folder or a .weights.h5 of the same backbone), or
    SFace's published weights (``sface``, for the ``sface`` backbone)."""
    from training.sface_keras import START_MODEL_NAMES, float_onnx, load_onnx_weights

    if str(source) in START_MODEL_NAMES:
        if embedder.name != "sface":
            raise FacegateError(f"--init-from {source} needs --backbone sface")
        load_onnx_weights(embedder, float_onnx())
        return
    source = Path(source)
    path = source / "embedder.weights.h5" if source.is_dir() else source
    if not path.is_file():
        raise FacegateError(f"{path}: no embedder weights there")
    try:
        embedder.load_weights(path)
    except ValueError as error:
        raise FacegateError(f"{path} does not fit this backbone: {error}") from None


def load_run_embedder(run: str | Path) -> tuple[keras.Model, dict]:
    """A run's embedding network, rebuilt from its ``model.json`` with its weights, and the
    facts that file holds (backbone, input, alignment, loss)."""
    run = Path(run)
    facts = json.loads((run / "model.json").read_text())
    embedder = build_backbone(BackboneSpec(**facts["backbone"]))
    load_embedder_weights(embedder, run)
    return embedder, facts


# --- callbacks ------------------------------------------------------------------------------

class FollowEpoch(keras.callbacks.Callback):
    """Tells the batches which epoch it is, so a resumed run draws the batches it would have."""

    def __init__(self, batches: FaceBatches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.set_epoch(epoch)


class HeldOutVerification(keras.callbacks.Callback):
    """LFW-style 10-fold accuracy and TAR at FAR 1e-3 on the held-out people, logged per
    epoch (``val_accuracy``, ``val_tar_at_far_1e-3``): a learning curve, not a model choice."""

    def __init__(self, embedder: keras.Model, held_out: CropSet, every: int):
        super().__init__()
        self.embedder, self.held_out, self.every = embedder, held_out, every
        self.images = held_out.images()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        if (epoch + 1) % self.every:
            # Present every epoch (empty between evaluations), so the CSV log has the columns.
            logs["val_accuracy"] = logs["val_tar_at_far_1e-3"] = float("nan")
            return
        from training.evaluate import verification_from_scores, verification_scores

        embeddings = self.embedder.predict(self.images, batch_size=100, verbose=0)
        logs["val_accuracy"] = logs["val_tar_at_far_1e-3"] = float("nan")
        if len(self.held_out.names) >= 4:  # what 10-fold pairs need
            found = np.ones(len(embeddings), bool)
            scores, same, folds = verification_scores(embeddings, found, self.held_out.labels)
            figures = verification_from_scores(scores, same, folds)
            logs["val_accuracy"] = figures["accuracy_mean"]
            logs["val_tar_at_far_1e-3"] = figures["tar_at_far_0.001"]
        logs[ALL_PAIRS_TAR] = all_pairs_tar(embeddings, self.held_out.labels)
        logs[DOOR_FNIR] = door_fnir(embeddings, self.held_out)


ALL_PAIRS_TAR = "val_all_pairs_tar_at_far_1e-3"
DOOR_FNIR = "val_door_fnir_at_fpir_1e-2"


def door_fnir(embeddings: np.ndarray, people: CropSet) -> float:
    """The door's miss rate at FPIR 1e-2 among these people alone: each enrolled from one
    photo (ten choices), identified by their next five, every photo also searched as a
    stranger against everyone else. Finer-grained than a TAR over a few thousand pairs, and
    what the door lives by; FPIR 1e-2 rather than 1e-3 because a few hundred people give
    thousands of stranger searches, not tens of thousands."""
    from training.compare import door_protocol, faces_of

    if len(people.names) < 3:
        return float("nan")
    report = door_protocol(faces_of(people, embeddings), np.zeros((0, embeddings.shape[1]),
                                                                   np.float32), curve=False)
    return float(report["at_fpir_0.01"]["fnir"])


def all_pairs_tar(embeddings: np.ndarray, labels: np.ndarray, far: float = 1e-3) -> float:
    """Share of same-person pairs above the score that ``far`` of all different-person pairs
    reach, over every pair (tens of thousands of impostors where 10-fold pairs give 3,000)."""
    upper = np.triu_indices(len(labels), 1)
    scores = (embeddings @ embeddings.T)[upper]
    same = (labels[:, None] == labels[None, :])[upper]
    impostors = np.sort(scores[~same])[::-1]
    if not same.any() or not len(impostors):
        return float("nan")
    return float(np.mean(scores[same] > impostors[int(far * len(impostors))]))


class KeepBest(keras.callbacks.Callback):
    """Early stopping on the validation people, keeping the best embedder seen: the lowest
    door miss rate (``DOOR_FNIR``), ties going to the earlier epoch.

    The start model is the first candidate (epoch 0): a fine-tuning that never beats it on
    people it has not trained on hands the start model back rather than a worse one.
    """

    def __init__(self, embedder: keras.Model, start_value: float, patience: int):
        super().__init__()
        self.embedder, self.patience = embedder, patience
        self.best, self.best_epoch, self.start_value = start_value, 0, start_value
        self.best_weights = embedder.get_weights()
        self.waited, self.stopped_early = 0, False

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(DOOR_FNIR, float("nan"))
        if not np.isfinite(value):
            return
        if value < self.best:
            self.best, self.best_epoch, self.waited = value, epoch + 1, 0
            self.best_weights = self.embedder.get_weights()
            return
        self.waited += 1
        if self.patience and self.waited >= self.patience:
            self.model.stop_training, self.stopped_early = True, True

    def on_train_end(self, logs=None):
        self.embedder.set_weights(self.best_weights)

    def summary(self) -> dict:
        return {"start_validation_fnir_at_fpir_1e-2": round(self.start_value, 4),
                "best_validation_fnir_at_fpir_1e-2": round(self.best, 4),
                "best_epoch": self.best_epoch, "stopped_early": self.stopped_early}


class SaveEmbedder(keras.callbacks.Callback):
    def __init__(self, embedder: keras.Model, folder: Path, every: int):
        super().__init__()
        self.embedder, self.folder, self.every = embedder, folder, every

    def on_epoch_end(self, epoch, logs=None):
        if self.every and (epoch + 1) % self.every == 0:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.embedder.save_weights(self.folder / f"embedder-epoch{epoch + 1:03d}.weights.h5")


class TimeBudget(keras.callbacks.Callback):
    """Stops training cleanly (the current epoch ends early) once ``minutes`` have passed,
    and keeps the backup, so running the same command again continues the schedule."""

    def __init__(self, minutes: float, backup: keras.callbacks.BackupAndRestore | None):
        super().__init__()
        self.seconds, self.backup = minutes * 60, backup
        self.started, self.epoch, self.stopped_at_epoch = 0.0, 0, None

    def on_train_begin(self, logs=None):
        # Once: the stages of a fine-tuning share one budget.
        self.started = self.started or time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() - self.started > self.seconds and not self.model.stop_training:
            self.model.stop_training = True
            self.stopped_at_epoch = self.epoch
            if self.backup is not None:
                self.backup.delete_checkpoint = False


class LearningRateLog(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            optimizer = self.model.optimizer
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(
                optimizer.learning_rate))


# --- devices --------------------------------------------------------------------------------

def configure_devices(config: TrainConfig) -> str:
    """Threads, mixed precision and data parallelism over GPUs; returns what was chosen.

    Under JAX, threads and hidden GPUs are set by the environment before Python starts
    (``XLA_FLAGS``, ``CUDA_VISIBLE_DEVICES``); TensorFlow and PyTorch take them here.
    """
    backend = backend_name()
    if backend == "tensorflow":
        import tensorflow as tf

        if config.threads:
            tf.config.threading.set_intra_op_parallelism_threads(config.threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        if config.gpus == 0:
            tf.config.set_visible_devices([], "GPU")
    elif backend == "torch" and config.threads:
        import torch

        torch.set_num_threads(config.threads)
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    gpus = _gpus(backend)
    wanted = len(gpus) if config.gpus is None else min(config.gpus, len(gpus))
    if wanted > 1 and backend == "jax":
        keras.distribution.set_distribution(keras.distribution.DataParallel(gpus[:wanted]))
    elif wanted > 1 and backend == "torch":
        raise FacegateError("several GPUs need the tensorflow or jax backend; "
                            "set --gpus 1 or KERAS_BACKEND")
    return f"{backend} backend, {wanted or 'no'} GPU(s)" + (
        ", mixed float16" if config.mixed_precision else "")


def _gpus(backend: str) -> list[str]:
    if backend == "torch":
        import torch

        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return [d for d in keras.distribution.list_devices() if "gpu" in d.lower()
            or "cuda" in d.lower()]


@contextmanager
def device_scope(config: TrainConfig):
    """TensorFlow spreads batches over several GPUs with a MirroredStrategy scope."""
    if backend_name() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        wanted = len(gpus) if config.gpus is None else min(config.gpus, len(gpus))
        if wanted > 1:
            with tf.distribute.MirroredStrategy([g.name for g in gpus[:wanted]]).scope():
                yield
            return
    yield


# --- the run --------------------------------------------------------------------------------

def train(config: TrainConfig) -> dict:
    """Train, write the run folder and return the summary (also ``training.json``)."""
    config.check()
    keras.utils.set_random_seed(config.seed)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    devices = configure_devices(config)
    train_people, held_out_people = split_people(Path(config.data), config.holdout_share,
                                                 config.seed)
    validation_people: list[str] = []
    if config.validation_share:
        train_people, validation_people = split_validation(train_people,
                                                           config.validation_share, config.seed)
    save_split(out / "split.json", train_people, held_out_people, validation_people)
    crops = CropSet.load(Path(config.data), set(train_people))
    held_out = CropSet.load(Path(config.data), set(held_out_people))
    validation = CropSet.load(Path(config.data), set(validation_people))
    (out / "config.json").write_text(json.dumps(asdict(config), indent=2))

    batches = FaceBatches(
        crops, batch_size=config.batch_size,
        people_per_batch=config.people_per_batch if config.loss == "triplet" else 0,
        augmentation=Augmentation(**{k: tuple(v) if isinstance(v, list) else v
                                     for k, v in config.augmentation.items()}),
        seed=config.seed, steps_per_epoch=config.steps_per_epoch, workers=config.workers)
    with device_scope(config):
        embedder, trainer, loss_facts = build_models(config, len(crops.names))
        if config.init_from:
            load_embedder_weights(embedder, config.init_from)

    budget = TimeBudget(config.time_budget_minutes, None) if config.time_budget_minutes \
        else None

    def logs(csv_name: str = "training.csv") -> list:
        # One CSV per stage of a fine-tuning: a CSV logger fixes its columns at its first
        # epoch, and the tuning stage adds the validation figures.
        loggers = [keras.callbacks.CSVLogger(str(out / csv_name), append=True),
                   keras.callbacks.TerminateOnNaN()]
        if importlib.util.find_spec("tensorflow"):
            loggers.append(keras.callbacks.TensorBoard(str(out / "tensorboard")))
        return loggers

    print(f"training {config.backbone} (width {config.width}) with the {config.loss} loss on "
          f"{len(crops)} crops of {len(crops.names)} people; {len(held_out_people)} people "
          f"held apart" + (f", {len(validation_people)} for early stopping"
                           if validation_people else "") + f"; {devices}", file=sys.stderr)
    started = time.monotonic()
    try:
        if config.fine_tuning:
            history, fine_tuning = fine_tune(config, embedder, trainer, batches, validation,
                                             held_out, logs, budget, out)
        else:
            fine_tuning = None
            history = _train_from_scratch(config, embedder, trainer, batches, held_out, logs,
                                          budget, out)
    finally:
        # The precision policy is process-wide: leave the next model in this process alone.
        keras.mixed_precision.set_global_policy("float32")
    seconds = time.monotonic() - started
    if not np.isfinite(history.get("loss", [0.0])[-1]):
        raise FacegateError("the loss became NaN; lower --learning-rate")
    embedder.save_weights(out / "embedder.weights.h5")
    epochs_run = len(history.get("loss", []))
    model_facts = {"backbone": BackboneSpec(config.backbone, config.width,
                                            config.embedding_dim, config.weight_decay).to_dict(),
                   "input": {"size": [112, 112], "colour": "RGB", "mean": 0.0, "std": 1.0,
                             "normalisation": "none: pixels 0..255, scaled inside the network"},
                   "alignment": json.loads((Path(config.data) / "prepare.json").read_text())
                   ["settings"]["alignment"],
                   **loss_facts}
    if config.init_from:
        model_facts["init_from"] = config.init_from
    (out / "model.json").write_text(json.dumps(model_facts, indent=2))
    summary = {
        **model_facts,
        "backend": backend_name(), "devices": devices,
        "train_people": len(crops.names), "train_crops": len(crops),
        "held_out_people": len(held_out_people), "held_out_crops": len(held_out),
        "validation_people": len(validation_people), "validation_crops": len(validation),
        "epochs_planned": config.epochs, "epochs_run_this_time": epochs_run,
        "stopped_by_time_budget": bool(budget and budget.stopped_at_epoch is not None),
        "steps_per_epoch": len(batches),
        "seconds": round(seconds, 1),
        "images_per_second": round(epochs_run * len(batches) * config.batch_size
                                   / max(seconds, 1e-9), 1),
        "final": {k: round(float(v[-1]), 4) for k, v in history.items()},
        "params": int(embedder.count_params()),
    }
    if fine_tuning is not None:
        summary["fine_tuning"] = fine_tuning
    (out / "training.json").write_text(json.dumps(summary, indent=2))
    if summary["stopped_by_time_budget"] and not config.fine_tuning:
        print(f"stopped by the time budget in epoch {budget.stopped_at_epoch + 1} of "
              f"{config.epochs}; run the same command again to continue", file=sys.stderr)
    return summary


def _train_from_scratch(config: TrainConfig, embedder: keras.Model, trainer: keras.Model,
                        batches: FaceBatches, held_out: CropSet, logs,
                        budget: TimeBudget | None, out: Path) -> dict:
    """One schedule over every epoch, resumable: an interrupted run continues where it was."""
    with device_scope(config):
        compile_for_training(trainer, config, config.epochs * len(batches))
    backup = keras.callbacks.BackupAndRestore(str(out / "backup"))
    callbacks = [FollowEpoch(batches), LearningRateLog()]
    if config.eval_every and len(held_out) >= 4:
        callbacks.append(HeldOutVerification(embedder, held_out, config.eval_every))
    callbacks += [SaveEmbedder(embedder, out / "checkpoints", config.checkpoint_every), backup,
                  *logs()]
    if budget:
        budget.backup = backup
        callbacks.append(budget)
    return trainer.fit(batches, epochs=config.epochs, callbacks=callbacks,
                       verbose=1 if sys.stderr.isatty() else 2).history


# --- fine-tuning ----------------------------------------------------------------------------

def units_of(embedder: keras.Model) -> list[tuple[str, list[keras.layers.Layer]]]:
    """The embedder's trainable units from input to output, each with its layers.

    SFace's units are its own (``conv_5_dw``, ..., ``head``, see ``training/sface_keras.py``);
    in other backbones every layer with weights is a unit.
    """
    from training.sface_keras import unit_of

    units: dict[str, list] = {}
    for layer in embedder.layers:
        if not layer.weights:
            continue
        key = (unit_of(layer.name) if embedder.name == "sface" else None) or layer.name
        units.setdefault(key, []).append(layer)
    return list(units.items())


class StartPointDecay(keras.regularizers.Regularizer):
    """Weight decay towards the start model's weights instead of zero (L2-SP: Li, Grandvalet
    and Davoine, 2018). Plain decay shrinks pretrained kernels, and a frozen batch norm
    after a shrunk kernel sees inputs off the statistics it was fitted to; pulling towards
    the start keeps what the network knew unless the data asks for a change."""

    def __init__(self, start: np.ndarray, strength: float):
        self.start = keras.Variable(start, trainable=False, name="decay_start")
        self.strength = float(strength)

    def __call__(self, weight):
        return self.strength * keras.ops.sum(keras.ops.square(weight - self.start))

    def get_config(self):
        return {"strength": self.strength}


def decay_towards_start(embedder: keras.Model) -> int:
    """Point every decayed weight's penalty at its current (start) value; returns how many."""
    count = 0
    for layer in embedder.layers:
        for weight in layer.weights:
            regularizer = getattr(weight, "regularizer", None)
            if isinstance(regularizer, keras.regularizers.L2):
                weight.regularizer = StartPointDecay(keras.ops.convert_to_numpy(weight),
                                                     float(regularizer.l2))
                count += 1
    return count


def imprint_centres(embedder: keras.Model, trainer: keras.Model, crops: CropSet) -> None:
    """Start each class centre at the mean direction of that person's start-model embeddings
    ("imprinting", Qi, Brown and Lowe, 2018), so the COCO loss begins near its optimum for a
    good start model rather than at random centres whose gradients would tear at it."""
    embeddings = embedder.predict(crops.images(), batch_size=100, verbose=0)
    means = np.stack([embeddings[crops.labels == person].mean(axis=0)
                      for person in range(len(crops.names))])
    means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    trainer.get_layer("coco_logits").centres.assign(means.astype(np.float32))


def set_trainable(embedder: keras.Model, config: TrainConfig, *, frozen: bool) -> list[str]:
    """Freeze the whole embedder, or train its top ``train_top_units`` units; returns the
    names of the units that train. Frozen batch norms run in inference mode (Keras 3), so
    they keep the start model's statistics."""
    embedder.trainable = True
    units = units_of(embedder)
    top = len(units) if config.train_top_units is None else config.train_top_units
    training = [] if frozen else [name for name, _ in units[len(units) - top:]]
    for name, layers in units:
        for layer in layers:
            batch_norm = isinstance(layer, keras.layers.BatchNormalization)
            layer.trainable = name in training and not (batch_norm and config.freeze_batchnorm)
    return training


def fine_tune(config: TrainConfig, embedder: keras.Model, trainer: keras.Model,
              batches: FaceBatches, validation: CropSet, held_out: CropSet, logs,
              budget: TimeBudget | None, out: Path) -> tuple[dict, dict]:
    """Adapt a good start model without wrecking it, in two stages:

    1. (COCO) ``warmup_centres_epochs`` with the embedder frozen: the class centres start
       random, and their first large gradients would otherwise flow into the pretrained
       layers and undo them. Only the centres train, at ``warmup_learning_rate``.
    2. The top ``train_top_units`` units train at the low ``learning_rate`` (warm-up, then
       cosine decay) for the remaining epochs. The validation people are judged every epoch
       and the best embedder is kept (``KeepBest``), the start model included; training stops
       after ``early_stopping_patience`` epochs without a better one.

    Not resumable: a rerun starts again (each stage takes minutes where a run from scratch
    takes hours). Returns the merged history and the facts for the summary.
    """
    history: dict[str, list] = {}

    def fit(callbacks: list, first: int, last: int, csv_name: str) -> None:
        result = trainer.fit(batches, initial_epoch=first, epochs=last,
                             callbacks=[FollowEpoch(batches), LearningRateLog(), *callbacks,
                                        *logs(csv_name), *([budget] if budget else [])],
                             verbose=1 if sys.stderr.isatty() else 2)
        for key, values in result.history.items():
            history.setdefault(key, []).extend(values)

    if config.decay_towards == "start":
        decay_towards_start(embedder)
    warmup = config.warmup_centres_epochs if config.loss == "coco" else 0
    if config.loss == "coco" and config.init_from:
        imprint_centres(embedder, trainer, batches.crops)
    if warmup:
        set_trainable(embedder, config, frozen=True)
        with device_scope(config):
            compile_for_training(trainer, config, warmup * len(batches),
                                 learning_rate=config.warmup_learning_rate, epochs=warmup)
        fit([], 0, warmup, "training-warmup.csv")
    training_units = set_trainable(embedder, config, frozen=False)
    with device_scope(config):
        compile_for_training(trainer, config, (config.epochs - warmup) * len(batches),
                             epochs=config.epochs - warmup)
    callbacks: list = [SaveEmbedder(embedder, out / "checkpoints", config.checkpoint_every)]
    keep_best = None
    if len(validation) >= 4:
        check = HeldOutVerification(embedder, validation, every=1)
        start_value = door_fnir(embedder.predict(check.images, batch_size=100, verbose=0),
                                validation)
        keep_best = KeepBest(embedder, start_value, config.early_stopping_patience)
        callbacks = [check, keep_best, *callbacks]
    elif config.eval_every and len(held_out) >= 4:
        callbacks.insert(0, HeldOutVerification(embedder, held_out, config.eval_every))
    if not (budget and budget.stopped_at_epoch is not None):
        fit(callbacks, warmup, config.epochs, "training.csv")
    facts = {"start_model": config.init_from, "warmup_centres_epochs": warmup,
             "training_units": training_units,
             "trainable_params": int(sum(int(np.prod(w.shape))
                                         for w in embedder.trainable_weights)),
             "freeze_batchnorm": config.freeze_batchnorm,
             "weight_decay": config.weight_decay, "decay_towards": config.decay_towards,
             "learning_rate": config.learning_rate,
             "selected_on": f"{len(validation.names)} validation people, the door's FNIR at "
                            "FPIR 1e-2" if keep_best else "no validation people: last epoch"}
    if keep_best:
        facts.update(keep_best.summary())
    return history, facts
