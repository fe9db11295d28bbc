"""Faces tracked across frames, and the K-of-M vote that opens the door.

One good frame is not enough: a face is followed from frame to frame by box overlap, and the
door opens only when the same enrolled person has won K of the track's last M frames, no
other enrolled person has won any of them, and the face passed the quality gate in those
frames. A single lucky frame of a look-alike, a face that changes identity half-way (a photo
swapped in front of the camera), or a blurred face never opens it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import count

import numpy as np

from device.identification import Identification

# Boxes of the same face in consecutive frames at 15 fps overlap far more than this.
MIN_TRACK_IOU = 0.3


@dataclass(frozen=True)
class Vote:
    """One frame's verdict on a track: who (or None), with what score, and why not."""

    person_id: str | None
    score: float
    refusal: str | None  # "low quality: ..." or "stranger" when person_id is None


@dataclass
class Track:
    id: int
    box: np.ndarray
    votes: deque[Vote]
    last_seen: int  # frame number
    latest: Identification
    decided: bool = False  # an unknown/denied event was already logged for this track


@dataclass(frozen=True)
class Verdict:
    """What a track's votes say now: ``winner`` once K of M agree, else None."""

    track: Track
    winner: str | None  # person id
    best_score: float
    stranger: bool  # M votes, none for an enrolled person


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class VoteTracker:
    """Keeps tracks across frames and counts their votes.

    ``needed`` (K) of the last ``window`` (M) frames must name the same person. A track not
    seen for ``window`` frames is forgotten, so a face that leaves and comes back starts over.
    """

    def __init__(self, needed: int = 2, window: int = 3) -> None:
        if not 1 <= needed <= window:
            raise ValueError(f"votes needed ({needed}) must be between 1 and the window "
                             f"({window})")
        self.needed = needed
        self.window = window
        self._tracks: list[Track] = []
        self._frame = 0
        self._ids = count(1)

    def update(self, observations: list[tuple[Identification, Vote]]) -> list[Verdict]:
        """Feed one frame's faces (largest first) with their votes; verdicts for those tracks."""
        self._frame += 1
        unclaimed = list(self._tracks)
        verdicts = []
        for identification, vote in observations:
            box = identification.face.box
            track = max(unclaimed, key=lambda t: box_iou(t.box, box), default=None)
            if track is None or box_iou(track.box, box) < MIN_TRACK_IOU:
                track = Track(next(self._ids), box, deque(maxlen=self.window), self._frame,
                              identification)
                self._tracks.append(track)
            else:
                unclaimed.remove(track)
            track.box, track.last_seen, track.latest = box, self._frame, identification
            track.votes.append(vote)
            verdicts.append(self._verdict(track))
        self._tracks = [t for t in self._tracks if self._frame - t.last_seen < self.window]
        return verdicts

    def _verdict(self, track: Track) -> Verdict:
        named = [v for v in track.votes if v.person_id is not None]
        people = {v.person_id for v in named}
        best = max((v.score for v in track.votes), default=-1.0)
        winner = None
        # Two different people in one window is a face that changed identity: no winner.
        if len(people) == 1 and len(named) >= self.needed:
            winner = people.pop()
        stranger = len(track.votes) == self.window and not named
        return Verdict(track, winner, best, stranger)

    def forget(self, track: Track) -> None:
        """Start this face over (after a grant, so one grant is not counted twice)."""
        track.votes.clear()

    @property
    def tracks(self) -> list[Track]:
        return list(self._tracks)
