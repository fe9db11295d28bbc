"""Which face of an enrolment photo is the person being enrolled.

A photo for enrolment often has someone else in it: a face at the edge of a news photo, half
cut by the frame, or small in the background (the thorough detector finds those with its
full-range model and mirrored border). Refusing every such photo refused one enrolment photo
in nine on LFW. The subject is instead the *most prominent* face, where prominence is the
face's visible area weighted by how near the centre it is:

    prominence = area of the box inside the frame x max(0, 1 - CENTRE_WEIGHT x offset)
    offset     = distance from the centre of that part of the box to the frame's centre,
                 as a share of half the frame's diagonal

so a face at the centre counts fully, one halfway to a corner counts half, one in a corner not
at all; a face cut by the frame counts only the part of it that is inside. The photo is
refused as ambiguous (``SeveralFaces``, listing the candidates so the admin can pick one) when
another face has at least ``SIMILAR_PROMINENCE`` of the subject's prominence.

Measured by ``python -m training.measure_subject_rule`` (``make measure-subject``,
``bench/results/enrolment-subject.json``, docs/recognition.md "Which face of a photo is
enrolled"): on lfw-a the rule refuses 0.9% of the photos and never chooses a face that is not
the person of the folder while that person's face is in the photo; on the same photos cut
off-centre (the subject a fifth to a half of the way to a corner) it chooses the wrong
person in 1 of 4,157 accepted views, where the face nearest the centre would be wrong in 61 of
3,823. No separate "how much of the face is cut off" term: the box is already clipped to the
frame, and weighting by the visible share as well made more wrong choices off centre.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from device.errors import SeveralFaces

# Both measured on lfw-a and on its off-centre views (training/measure_subject_rule.py): a
# stronger centre weight (1.25) or a looser refusal share (0.55) chooses the wrong person in 12
# or 6 off-centre views; weaker ones only refuse more (weight 0.75: 2.0% of lfw-a refused,
# share 0.4: 2.1%, against 0.9%).
CENTRE_WEIGHT = 1.0  # per unit of offset (0 at the centre, 1 at a corner)
SIMILAR_PROMINENCE = 0.5  # a rival at least this share of the subject's prominence: ambiguous


class BoxedFace(Protocol):
    """What the rule looks at: the pipeline's ``Face`` (or anything with a box and an area)."""

    @property
    def box(self) -> np.ndarray: ...  # (4,) x1, y1, x2, y2 in frame pixels

    @property
    def area(self) -> float: ...  # pixels^2


def offset_from_centre(box: Sequence[float] | np.ndarray, frame_shape: tuple[int, ...]
                       ) -> float:
    """Distance from the box's centre to the frame's centre, as a share of half the frame's
    diagonal: 0 at the centre, 1 in a corner."""
    height, width = frame_shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    dx, dy = (x1 + x2) / 2 - width / 2, (y1 + y2) / 2 - height / 2
    return float(np.hypot(dx, dy) / np.hypot(width / 2, height / 2))


def inside_frame(box: Sequence[float] | np.ndarray, frame_shape: tuple[int, ...]
                 ) -> tuple[float, float, float, float]:
    """The part of the box inside the frame (the pipeline's boxes are already clipped; this
    keeps the rule right for boxes that are not): x1, y1, x2, y2, empty when outside."""
    height, width = frame_shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
    y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
    return x1, y1, max(x1, x2), max(y1, y2)


def prominence(face: BoxedFace, frame_shape: tuple[int, ...], *,
               centre_weight: float = CENTRE_WEIGHT) -> float:
    """The face's area inside the frame (pixels^2), weighted by its nearness to the centre."""
    x1, y1, x2, y2 = inside_frame(face.box, frame_shape)
    weight = max(0.0, 1.0 - centre_weight * offset_from_centre((x1, y1, x2, y2), frame_shape))
    return (x2 - x1) * (y2 - y1) * weight


def choose_subject(faces: Sequence[BoxedFace], frame_shape: tuple[int, ...], *,
                   centre_weight: float = CENTRE_WEIGHT,
                   similar_prominence: float = SIMILAR_PROMINENCE) -> int:
    """The index (into ``faces``) of the face to enrol: the most prominent one.

    ``faces`` is what the pipeline returned for the photo (at least one; no face is the
    caller's ``NoFaceFound``); ``frame_shape`` is the photo's ``(height, width[, channels])``.
    A single face is always chosen here (its quality is judged later). Raises ``SeveralFaces``
    when other faces have at least ``similar_prominence`` of the subject's prominence; its
    ``faces`` lists every such candidate, the most prominent first, as
    ``{"index", "box", "prominence"}`` (the index into ``faces``, the box in frame pixels, the
    prominence as a share of the top one's).
    """
    if not faces:
        raise ValueError("choose_subject needs at least one face (no face is NoFaceFound)")
    if len(faces) == 1:
        return 0
    scores = [prominence(face, frame_shape, centre_weight=centre_weight) for face in faces]
    order = sorted(range(len(faces)), key=lambda i: (-scores[i], i))
    top = scores[order[0]]
    # ``top == 0`` only when every face sits in a corner: nothing stands out, so all compete.
    candidates = [i for i in order if top == 0 or scores[i] >= similar_prominence * top]
    if len(candidates) == 1:
        return candidates[0]
    raise SeveralFaces(
        f"{len(candidates)} faces of similar size found; pick one or use a photo of one person",
        faces=[{"index": i,
                "box": [round(float(v), 1) for v in faces[i].box],
                "prominence": round(scores[i] / top, 3) if top else 0.0}
               for i in candidates])
