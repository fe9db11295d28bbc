import math

import keras
import numpy as np
import pytest

from training.losses import CocoLogits, TripletLoss, coco_alpha_lower_bound


@pytest.mark.parametrize("classes", [2, 581, 10575])
def test_the_alpha_bound_lets_the_right_class_just_reach_its_posterior(classes):
    epsilon = 0.01
    alpha = coco_alpha_lower_bound(classes, epsilon)
    # Feature on its centre (cosine 1), the other centres a regular simplex away.
    right = math.exp(alpha)
    posterior = right / (right + (classes - 1) * math.exp(-alpha / (classes - 1)))
    assert posterior == pytest.approx(1 - epsilon, abs=1e-9)
    assert coco_alpha_lower_bound(classes, epsilon / 10) > alpha


def test_the_alpha_bound_refuses_a_single_class():
    with pytest.raises(ValueError):
        coco_alpha_lower_bound(1)


def test_coco_logits_are_alpha_times_the_cosine_to_each_centre():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(5, 8)).astype("float32") * 7
    layer = CocoLogits(num_classes=3, alpha=12.5)
    logits = keras.ops.convert_to_numpy(layer(features))
    centres = keras.ops.convert_to_numpy(layer.centres)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    expected = 12.5 * unit @ (centres / np.linalg.norm(centres, axis=1, keepdims=True)).T
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(logits).max() <= 12.5 + 1e-4


def _semi_hard_reference(embeddings, labels, margin):
    """FaceNet's semi-hard triplet loss, one (anchor, positive) at a time."""
    distance = ((embeddings[:, None] - embeddings[None]) ** 2).sum(-1)
    losses = []
    for a in range(len(labels)):
        for p in range(len(labels)):
            if a == p or labels[a] != labels[p]:
                continue
            negatives = distance[a][labels != labels[a]]
            farther = negatives[negatives > distance[a, p]]
            chosen = farther.min() if len(farther) else negatives.max()
            losses.append(max(distance[a, p] - chosen + margin, 0.0))
    return float(np.mean(losses))


def test_triplet_loss_matches_semi_hard_mining_done_by_hand():
    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(12, 16))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    labels = np.repeat(np.arange(4), 3)
    loss = TripletLoss(margin=0.2)(labels, embeddings.astype("float32"))
    assert float(loss) == pytest.approx(_semi_hard_reference(embeddings, labels, 0.2),
                                        rel=1e-4)


def test_triplet_loss_is_zero_when_people_are_far_apart():
    embeddings = np.repeat(np.eye(4, dtype="float32"), 3, axis=0)
    labels = np.repeat(np.arange(4), 3)
    assert float(TripletLoss(margin=0.2)(labels, embeddings)) == pytest.approx(0.0)
