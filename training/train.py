"""``train``: an embedding network with the COCO loss (or the triplet baseline) on prepared crops.

The method: RMSProp, L2 weight decay 1e-3, mini-batches of 100, a learning-rate schedule
(linear warm-up, then cosine decay to zero), augmentation by rotation, crop, hue, saturation
and flip. Everything here is Keras 3 with ``keras.ops``, so it runs under the TensorFlow, JAX
or PyTorch backend (``KERAS_BACKEND``); the run folder it writes is the same under all three.

A run folder holds:

- ``config.json`` and ``split.json`` (the people trained on and the people held apart);
- ``embedder.weights.h5`` and ``model.json``: the embedding network, without the loss's head
  (backend-neutral Keras weights; ``export`` turns them into TFLite);
- ``checkpoints/``: the embedder every ``checkpoint_every`` epochs; ``backup/``: the whole
  training state each epoch, so running the same command again resumes an interrupted run;
- ``training.csv`` (loss, learning rate and held-out verification per epoch),
  ``tensorboard/`` (when TensorFlow is installed) and ``training.json`` (the summary).
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
from training.data import Augmentation, CropSet, FaceBatches, save_split, split_people
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
    init_from: str | None = None  # a run folder or .weights.h5 to start from (fine-tuning)
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


def compile_for_training(trainer: keras.Model, config: TrainConfig, total_steps: int) -> None:
    warmup = int(config.warmup_epochs * total_steps / config.epochs)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate / 100, decay_steps=max(1, total_steps - warmup),
        warmup_target=config.learning_rate, warmup_steps=warmup)
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
    """Weights of a previous run (its folder or a .weights.h5 of the same backbone)."""
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
        found = np.ones(len(embeddings), bool)
        scores, same, folds = verification_scores(embeddings, found, self.held_out.labels)
        figures = verification_from_scores(scores, same, folds)
        logs["val_accuracy"] = figures["accuracy_mean"]
        logs["val_tar_at_far_1e-3"] = figures["tar_at_far_0.001"]


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

    def __init__(self, minutes: float, backup: keras.callbacks.BackupAndRestore):
        super().__init__()
        self.seconds, self.backup = minutes * 60, backup
        self.started, self.epoch, self.stopped_at_epoch = 0.0, 0, None

    def on_train_begin(self, logs=None):
        self.started = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() - self.started > self.seconds and not self.model.stop_training:
            self.model.stop_training = True
            self.stopped_at_epoch = self.epoch
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
    save_split(out / "split.json", train_people, held_out_people)
    crops = CropSet.load(Path(config.data), set(train_people))
    held_out = CropSet.load(Path(config.data), set(held_out_people))
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
        compile_for_training(trainer, config, config.epochs * len(batches))

    backup = keras.callbacks.BackupAndRestore(str(out / "backup"))
    callbacks = [FollowEpoch(batches), LearningRateLog()]
    if config.eval_every and len(held_out) >= 4:
        callbacks.append(HeldOutVerification(embedder, held_out, config.eval_every))
    callbacks += [
        SaveEmbedder(embedder, out / "checkpoints", config.checkpoint_every),
        backup,
        keras.callbacks.CSVLogger(str(out / "training.csv"), append=True),
        keras.callbacks.TerminateOnNaN(),
    ]
    if importlib.util.find_spec("tensorflow"):
        callbacks.append(keras.callbacks.TensorBoard(str(out / "tensorboard")))
    budget = TimeBudget(config.time_budget_minutes, backup) if config.time_budget_minutes \
        else None
    if budget:
        callbacks.append(budget)

    print(f"training {config.backbone} (width {config.width}) with the {config.loss} loss on "
          f"{len(crops)} crops of {len(crops.names)} people; {len(held_out_people)} people "
          f"held apart; {devices}", file=sys.stderr)
    started = time.monotonic()
    try:
        history = trainer.fit(batches, epochs=config.epochs, callbacks=callbacks,
                              verbose=1 if sys.stderr.isatty() else 2)
    finally:
        # The precision policy is process-wide: leave the next model in this process alone.
        keras.mixed_precision.set_global_policy("float32")
    seconds = time.monotonic() - started
    if not np.isfinite(history.history.get("loss", [0.0])[-1]):
        raise FacegateError("the loss became NaN; lower --learning-rate")
    embedder.save_weights(out / "embedder.weights.h5")
    epochs_run = len(history.history.get("loss", []))
    model_facts = {"backbone": BackboneSpec(config.backbone, config.width,
                                            config.embedding_dim, config.weight_decay).to_dict(),
                   "input": {"size": [112, 112], "colour": "RGB", "mean": 0.0, "std": 1.0,
                             "normalisation": "none: pixels 0..255, scaled inside the network"},
                   "alignment": json.loads((Path(config.data) / "prepare.json").read_text())
                   ["settings"]["alignment"],
                   **loss_facts}
    (out / "model.json").write_text(json.dumps(model_facts, indent=2))
    summary = {
        **model_facts,
        "backend": backend_name(), "devices": devices,
        "train_people": len(crops.names), "train_crops": len(crops),
        "held_out_people": len(held_out_people), "held_out_crops": len(held_out),
        "epochs_planned": config.epochs, "epochs_run_this_time": epochs_run,
        "stopped_by_time_budget": bool(budget and budget.stopped_at_epoch is not None),
        "steps_per_epoch": len(batches),
        "seconds": round(seconds, 1),
        "images_per_second": round(epochs_run * len(batches) * config.batch_size
                                   / max(seconds, 1e-9), 1),
        "final": {k: round(float(v[-1]), 4) for k, v in history.history.items()},
        "params": int(embedder.count_params()),
    }
    (out / "training.json").write_text(json.dumps(summary, indent=2))
    if summary["stopped_by_time_budget"]:
        print(f"stopped by the time budget in epoch {budget.stopped_at_epoch + 1} of "
              f"{config.epochs}; run the same command again to continue", file=sys.stderr)
    return summary
