"""The whole pipeline on real faces: who matches whom, alignment, quality."""

from __future__ import annotations

import cv2
import numpy as np

from device.vision.alignment import ARCFACE_TEMPLATE_112, Aligner, similarity_transform
from tests.conftest import DATA, load


def embedding_of(pipeline, path):
    faces = pipeline.process(load(path))
    assert len(faces) == 1, path
    return faces[0].embedding


def test_same_person_scores_above_threshold_and_different_people_below(pipeline, people):
    threshold = pipeline.embedder_card.threshold["score"]
    embeddings = {name: [embedding_of(pipeline, p) for p in paths]
                  for name, paths in people.items()}
    (name_a, faces_a), (name_b, faces_b) = embeddings.items()
    for faces in (faces_a, faces_b):
        assert float(faces[0] @ faces[1]) >= threshold
        assert float(faces[0] @ faces[2]) >= threshold
    for a in faces_a:
        for b in faces_b:
            assert float(a @ b) < threshold
    for stranger in sorted((DATA / "strangers").glob("*.jpg")):
        other = embedding_of(pipeline, stranger)
        assert max(float(other @ e) for e in faces_a + faces_b) < threshold


def test_face_result_has_every_field_with_the_documented_shapes(pipeline, people):
    face = pipeline.process(load(people["Colin_Powell"][0]))[0]
    assert face.box.shape == (4,)
    assert face.landmarks5.shape == (5, 2)
    assert face.landmarks.shape == (468, 3)
    assert face.aligned.shape == (112, 112, 3)
    assert face.embedding.shape == (128,) and face.embedding.dtype == np.float32
    assert abs(float(np.linalg.norm(face.embedding)) - 1.0) < 1e-4
    assert 0 < face.score <= 1
    assert face.quality.interocular_px > 20


def test_no_face_gives_an_empty_list_not_none(pipeline):
    assert pipeline.process(np.zeros((480, 640, 3), np.uint8)) == []


def test_faces_come_largest_first(pipeline):
    faces = pipeline.process(load(DATA / "couple.jpg"))
    assert len(faces) == 2
    assert faces[0].area >= faces[1].area


def rotate(image, degrees):
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE)


def test_a_tilted_face_still_aligns_and_matches(pipeline, people):
    upright_path, other_path = people["Serena_Williams"][0], people["Serena_Williams"][1]
    threshold = pipeline.embedder_card.threshold["score"]
    reference = embedding_of(pipeline, other_path)
    upright = embedding_of(pipeline, upright_path)
    for degrees in (-30, 25):
        tilted = pipeline.process(rotate(load(upright_path), degrees))[0]
        # The roll we measure is the tilt we applied (OpenCV's angle is anticlockwise).
        assert abs(tilted.quality.roll + degrees) < 6
        assert float(tilted.embedding @ upright) > 0.9
        assert float(tilted.embedding @ reference) >= threshold


def test_similarity_transform_recovers_a_known_rotation_scale_and_shift():
    angle, scale, shift = np.radians(20), 1.7, np.array([12.0, -5.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    source = ARCFACE_TEMPLATE_112 * 2.0
    target = source @ rotation.T + shift
    matrix = similarity_transform(source, target)
    assert np.allclose(matrix[:2, :2], rotation, atol=1e-6)
    assert np.allclose(matrix[:2, 2], shift, atol=1e-5)


def test_homography_alignment_agrees_with_similarity_on_a_mildly_turned_face(pipeline):
    # Most faces fall back to the similarity transform (see the alignment's guard); this one
    # is within the guard's limits.
    frame = load(DATA / "strangers" / "AJ_Cook_0001.jpg")
    face = pipeline.process(frame)[0]
    homography = Aligner(method="homography",
                         canonical_mesh=pipeline.embedder_card.companion("canonical_mesh"))
    aligned = homography.align(frame, face.landmarks5, face.landmarks)
    assert aligned.method == "homography"
    assert aligned.inlier_share >= 0.6
    embedding = pipeline.embed_crop(aligned.crop)
    assert float(embedding @ face.embedding) > 0.8


def test_homography_falls_back_to_similarity_when_the_fit_is_degenerate(pipeline, people):
    frame = load(people["Colin_Powell"][0])
    face = pipeline.process(frame)[0]
    homography = Aligner(method="homography",
                         canonical_mesh=pipeline.embedder_card.companion("canonical_mesh"))
    # Landmarks scrambled at random: no homography explains them.
    scrambled = np.random.default_rng(0).permutation(face.landmarks)
    aligned = homography.align(frame, face.landmarks5, scrambled)
    assert aligned.method == "similarity"


def test_quality_measures_blur_and_darkness(pipeline, people):
    frame = load(people["Colin_Powell"][0])
    sharp = pipeline.process(frame)[0].quality
    blurred = pipeline.process(cv2.GaussianBlur(frame, (0, 0), 3))[0].quality
    dark = pipeline.process((frame * 0.25).astype(np.uint8))[0].quality
    assert blurred.sharpness < sharp.sharpness / 2
    assert dark.brightness < sharp.brightness / 2
