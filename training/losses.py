"""The COCO loss (congenerous cosine) and the FaceNet triplet loss, in backend-neutral Keras.

COCO (Liu, Li and Wang, "Rethinking Feature Discrimination and Polymerization for Large-scale
Recognition", 2017): every class has a learned centre; features and centres are both
L2-normalised, so their dot product is a cosine; the cosines are scaled by ``alpha`` and fed
to softmax cross-entropy over the classes. Pulling a face towards its own centre and away
from every other centre makes faces of one person gather (polymerise) and people separate,
which is what a door comparing cosines against a threshold needs.

Why ``alpha``: unit vectors give cosines in [-1, 1], so without a scale the softmax can never
become confident and the loss keeps pushing on faces that are already right. The COCO paper's
second version derives a lower bound for the scale from the number of classes ``K``. The
bound used here (``coco_alpha_lower_bound``) follows that argument, derived afresh (the
paper's text was not at hand, so its exact constants may differ):

    At best a feature sits on its own centre (cosine 1) and the K centres are spread as far
    apart as K unit vectors can be (a regular simplex: cosine -1/(K-1) to each other), so
    the posterior of the right class is at most

        p = e^alpha / (e^alpha + (K-1) e^(-alpha / (K-1))).

    Asking that this can reach 1 - epsilon gives

        alpha >= (K-1)/K * ln((K-1) (1-epsilon) / epsilon).

With K = 581 people and epsilon = 0.01 that is 10.9; with 10,575 (CASIA-WebFace) 13.8.
``alpha`` is a parameter with that bound as its default.
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

DEFAULT_ALPHA_EPSILON = 0.01
DEFAULT_TRIPLET_MARGIN = 0.2


def coco_alpha_lower_bound(num_classes: int, epsilon: float = DEFAULT_ALPHA_EPSILON) -> float:
    """The smallest scale that lets the right class reach posterior ``1 - epsilon``."""
    if num_classes < 2:
        raise ValueError("the COCO loss needs at least two classes")
    if not 0 < epsilon < 1:
        raise ValueError("epsilon must be between 0 and 1")
    k = num_classes
    return (k - 1) / k * math.log((k - 1) * (1 - epsilon) / epsilon)


@keras.saving.register_keras_serializable(package="facegate")
class CocoLogits(layers.Layer):
    """alpha * cos(feature, centre_k) for every class k: the logits of the COCO loss.

    Feed them to ``SparseCategoricalCrossentropy(from_logits=True)``. The centres are trained
    with the network; they are not weight-decayed, since only their direction matters.
    """

    def __init__(self, num_classes: int, alpha: float, **kwargs):
        kwargs.setdefault("dtype", "float32")  # cosines and softmax stay float32
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.alpha = float(alpha)

    def build(self, input_shape):
        self.centres = self.add_weight(shape=(self.num_classes, int(input_shape[-1])),
                                       initializer="glorot_normal", name="centres")

    def call(self, features):
        features = ops.cast(features, "float32")
        features = features / ops.sqrt(ops.maximum(
            ops.sum(features * features, axis=-1, keepdims=True), 1e-12))
        centres = self.centres / ops.sqrt(ops.maximum(
            ops.sum(self.centres * self.centres, axis=-1, keepdims=True), 1e-12))
        return self.alpha * ops.matmul(features, ops.transpose(centres))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "alpha": self.alpha}


@keras.saving.register_keras_serializable(package="facegate")
class TripletLoss(keras.losses.Loss):
    """FaceNet's triplet loss with online semi-hard mining inside each batch.

    ``y_true`` holds person labels, ``y_pred`` unit embeddings. For every anchor-positive pair
    of the batch the negative is the nearest one still farther than the positive (semi-hard,
    Schroff et al., 2015 — the hardest negatives collapse training early); when there is none,
    the farthest negative. Distances are squared Euclidean, so the margin is FaceNet's 0.2.
    Batches need several images per person: the trainer draws P people x K images.
    """

    def __init__(self, margin: float = DEFAULT_TRIPLET_MARGIN, name: str = "triplet", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = float(margin)

    def call(self, y_true, y_pred):
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        embeddings = ops.cast(y_pred, "float32")
        squared = ops.sum(embeddings * embeddings, axis=1)
        distance = ops.maximum(squared[:, None] + squared[None, :]
                               - 2.0 * ops.matmul(embeddings, ops.transpose(embeddings)), 0.0)
        same = ops.equal(labels[:, None], labels[None, :])
        size = ops.shape(labels)[0]
        positive = ops.logical_and(same, ops.logical_not(ops.eye(size, dtype="bool")))
        negative = ops.logical_not(same)
        # [a, p, n]: is n a negative of a farther from a than p is?
        d_ap = distance[:, :, None]
        d_an = distance[:, None, :]
        outside = ops.logical_and(negative[:, None, :], ops.greater(d_an, d_ap))
        large = ops.max(distance) + 1.0
        semi_hard = ops.min(ops.where(outside, d_an, large), axis=2)
        hardest = ops.max(ops.where(negative, distance, 0.0), axis=1)[:, None]
        has_semi_hard = ops.any(outside, axis=2)
        chosen = ops.where(has_semi_hard, semi_hard, hardest)
        losses = ops.maximum(distance - chosen + self.margin, 0.0)
        weights = ops.cast(positive, "float32")
        return ops.sum(losses * weights) / ops.maximum(ops.sum(weights), 1.0)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}
