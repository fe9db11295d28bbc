"""Fine-tuning MiniFASNet on pad-dev: the training loop and the scores it is judged by.

The network starts from Minivision's weights (rebuilt by ``training/minifasnet.py``) and is
trained end to end at a small learning rate, so it keeps what it knew about screens and masks
of upstream's data while it learns pad-dev's close-up prints. The loss is binary: the
cross-entropy of the live class's probability, with both classes weighted equally (pad-dev
has 2.5 attacks per bona fide photo). The three-class output stays, so the fine-tuned file
keeps upstream's contract and the door reads class 1 as before.

Every epoch draws fresh augmented crops (``training/liveness_augment.py``); a share of the
bona fide photos are turned into synthetic screen replays and labelled as attacks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from device.vision.image_io import read_image
from device.vision.liveness import liveness_crop
from training.liveness_augment import screen_replay, training_crop
from training.liveness_data import ATTACK, BONA, Sample
from training.minifasnet import LIVE_CLASS, Network, keras_from_onnx


@dataclass(frozen=True)
class FineTuning:
    epochs: int = 12
    batch: int = 32
    learning_rate: float = 1e-4
    weight_decay: float = 1e-3  # as the embedder's training
    screen_share: float = 0.3  # of the bona fide photos, each epoch, made into screen attacks
    # After every batch each weight moves this share of the way back to upstream's value
    # (decoupled L2-SP): the network learns pad-dev without forgetting what upstream's data
    # taught it (screens, other prints). 0: plain fine-tuning.
    pull_to_start: float = 0.0
    seed: int = 0


def load_photos(samples: list[Sample]) -> list[np.ndarray]:
    return [read_image(sample.path)[0] for sample in samples]


def epoch_batch(photos: list[np.ndarray], samples: list[Sample], indices: list[int],
                network: Network, rng: np.random.Generator, screen_share: float
                ) -> tuple[np.ndarray, np.ndarray]:
    crops, labels = [], []
    for i in indices:
        photo, sample = photos[i], samples[i]
        crops.append(training_crop(photo, sample.box, network.crop_scale, rng))
        labels.append(sample.label)
        if sample.label == BONA and rng.random() < screen_share:
            crops.append(training_crop(screen_replay(photo, rng), sample.box,
                                       network.crop_scale, rng))
            labels.append(ATTACK)
    return np.stack(crops).astype(np.float32), np.array(labels, np.float32)


def fine_tune(network: Network, photos: list[np.ndarray], samples: list[Sample],
              indices: list[int], settings: FineTuning = FineTuning(), *, log=print) -> object:
    """The network fine-tuned on ``samples[indices]``; returns the Keras model."""
    import keras

    keras.utils.set_random_seed(settings.seed)
    model = keras_from_onnx(network.onnx_file, name=f"minifasnet_{network.key}")
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False  # the embedding's batch norm keeps upstream's statistics

    def live_loss(labels, probabilities):
        live = keras.ops.clip(probabilities[:, LIVE_CLASS], 1e-6, 1 - 1e-6)
        is_bona = 1.0 - labels
        # Equal weight to each class, whatever the mix in the batch.
        bona_weight = 0.5 / keras.ops.maximum(keras.ops.mean(is_bona), 1e-3)
        attack_weight = 0.5 / keras.ops.maximum(keras.ops.mean(labels), 1e-3)
        loss = -(bona_weight * is_bona * keras.ops.log(live)
                 + attack_weight * labels * keras.ops.log(1 - live))
        return keras.ops.mean(loss)

    model.compile(optimizer=keras.optimizers.AdamW(settings.learning_rate,
                                                   weight_decay=settings.weight_decay),
                  loss=live_loss)
    callbacks = [_PullToStart(model, settings.pull_to_start)] if settings.pull_to_start else []
    rng = np.random.default_rng(settings.seed)
    for epoch in range(settings.epochs):
        started = time.monotonic()
        crops, labels = epoch_batch(photos, samples, indices, network, rng,
                                    settings.screen_share)
        history = model.fit(crops, labels, batch_size=settings.batch, epochs=1, shuffle=True,
                            verbose=0, callbacks=callbacks)
        log(f"  {network.key} epoch {epoch + 1}/{settings.epochs}: loss "
            f"{history.history['loss'][-1]:.4f}, {len(labels)} crops, "
            f"{time.monotonic() - started:.0f} s")
    return model


class _PullToStart:
    """A Keras callback: after each batch, ``w <- w - rate * (w - w_start)``."""

    def __new__(cls, model, rate: float):
        import keras

        class Pull(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.pairs = [(w, keras.ops.convert_to_tensor(w.numpy()))
                              for w in model.trainable_weights]

            def on_train_batch_end(self, batch, logs=None) -> None:
                for weight, start in self.pairs:
                    weight.assign(weight - rate * (weight - start))

        return Pull()


def live_scores(model: object, photos: list[np.ndarray], samples: list[Sample],
                indices: list[int], network: Network) -> np.ndarray:
    """The live probability of each sample's plain crop (no augmentation), as the door cuts it."""
    crops = np.stack([liveness_crop(photos[i], samples[i].box, network.crop_scale)
                      for i in indices]).astype(np.float32)
    return model.predict(crops, batch_size=128, verbose=0)[:, LIVE_CLASS]


def error_rates(live: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, float]:
    """(APCER, BPCER) at ``threshold``: attacks scored live (>= threshold), bona fide not."""
    attacks, bona = live[labels == ATTACK], live[labels == BONA]
    return float(np.mean(attacks >= threshold)), float(np.mean(bona < threshold))


def threshold_at_bpcer(live: np.ndarray, labels: np.ndarray, target: float) -> float:
    """The highest threshold whose BPCER stays at or under ``target``."""
    bona = np.sort(live[labels == BONA])
    allowed = int(np.floor(target * len(bona)))  # bona fide faces that may fall below
    return float(bona[allowed]) if allowed < len(bona) else float(bona[-1])
