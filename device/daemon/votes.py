"""Faces tracked across frames, and the K-of-M vote that opens the door.

One good frame is not enough: a face is followed from frame to frame by box overlap, and the
door opens only when the same enrolled person has won K of the track's last M frames, no
other enrolled person has won any of them, and the face passed the quality gate in those
frames. A single lucky frame of a look-alike, a face that changes identity half-way (a photo
swapped in front of the camera), or a blurred face never opens it.

With the liveness check on, the track also needs K *live* frames among the same last M
(``live_needed``, the liveness K). A track is judged an **attack** once at least M - K + 1
of its last M frames were scored as not live, so that it can no longer reach K live ones,
and at least one of those M frames showed a face good enough to judge (it passed the
quality gate: an identity winner always has); an attack never opens, for as long as the
track lasts. A frame whose liveness could not be scored is not live but no attack vote.

With a motion cue (``cue``, ``liveness.motion_cue``; see ``device/daemon/cues.py``) a track
that has its identity and live votes still waits until it has blinked or turned its head;
waiting is no attack, and the cue never stands in for the texture model's votes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import count

import numpy as np

from device.daemon.cues import CueRule, CueSample, CueWatch
from device.identification import Identification
from device.liveness import Liveness

# Boxes of the same face in consecutive frames at 15 fps overlap far more than this.
MIN_TRACK_IOU = 0.3


@dataclass(frozen=True)
class Vote:
    """One frame's verdict on a track: who (or None), with what score, and why not."""

    person_id: str | None
    score: float
    refusal: str | None  # "low quality: ..." or "stranger" when person_id is None
    liveness: Liveness | None = None  # None: the liveness check is off
    good_quality: bool = True  # the face passed the quality gate
    cue: CueSample | None = None  # the motion cue's measurements (None: no cue asked for)


@dataclass
class Track:
    id: int
    box: np.ndarray
    votes: deque[Vote]
    last_seen: int  # frame number
    latest: Identification
    decided: bool = False  # an unknown/attack event was already logged for this track
    attack: bool = False  # judged a presentation attack: this track never opens
    cue: CueWatch | None = None  # the motion cue, when one is asked for
    cue_wait_logged: bool = False  # "waits for a head turn" was already logged


@dataclass(frozen=True)
class Verdict:
    """What a track's votes say now: ``winner`` once K of M agree (and, with liveness, K of
    M were live), else None. ``resembles`` is the person the face looks like: the identity
    winner, else the best-scoring enrolled person among its votes (None: nobody)."""

    track: Track
    winner: str | None  # person id
    best_score: float
    stranger: bool  # M votes, none for an enrolled person
    attack: bool = False  # the track is (now or earlier) judged a presentation attack
    resembles: str | None = None  # person id
    awaiting_cue: bool = False  # identity and live votes are there, the motion cue is not


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class VoteTracker:
    """Keeps tracks across frames and counts their votes.

    ``needed`` (K) of the last ``window`` (M) frames must name the same person, and with
    ``live_needed`` (the liveness K; None: no liveness check) that many must be live; with
    ``cue`` (only with the liveness check) the track must also have shown that motion cue.
    A track not seen for ``window`` frames is forgotten, so a face that leaves and comes back
    starts over.
    """

    def __init__(self, needed: int = 2, window: int = 3, live_needed: int | None = None,
                 cue: CueRule | None = None) -> None:
        if not 1 <= needed <= window:
            raise ValueError(f"votes needed ({needed}) must be between 1 and the window "
                             f"({window})")
        if live_needed is not None and not 1 <= live_needed <= window:
            raise ValueError(f"live votes needed ({live_needed}) must be between 1 and the "
                             f"window ({window})")
        self.needed = needed
        self.window = window
        self.live_needed = live_needed
        self.cue = cue if live_needed is not None else None
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
                              identification,
                              cue=CueWatch(self.cue) if self.cue is not None else None)
                self._tracks.append(track)
            else:
                unclaimed.remove(track)
            track.box, track.last_seen, track.latest = box, self._frame, identification
            track.votes.append(vote)
            if track.cue is not None and vote.cue is not None and vote.good_quality:
                track.cue.add(vote.cue)
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
            winner = next(iter(people))
        closest = max(named, key=lambda v: v.score, default=None)
        resembles = winner or (closest.person_id if closest is not None else None)
        stranger = len(track.votes) == self.window and not named
        if self.live_needed is None:
            return Verdict(track, winner, best, stranger, resembles=resembles)
        if self._is_attack(track):
            track.attack = True
        live = sum(v.liveness is not None and v.liveness.live for v in track.votes)
        if track.attack or live < self.live_needed:
            winner = None
        awaiting = winner is not None and track.cue is not None and track.cue.seen is None
        if awaiting:
            winner = None
        return Verdict(track, winner, best, stranger, attack=track.attack, resembles=resembles,
                       awaiting_cue=awaiting)

    def _is_attack(self, track: Track) -> bool:
        attacks = sum(v.liveness is not None and v.liveness.attack for v in track.votes)
        # So many attack votes that the window can no longer hold K live ones.
        hopeless = attacks >= self.window - self.live_needed + 1
        return hopeless and any(v.good_quality for v in track.votes)

    def forget(self, track: Track) -> None:
        """Start this face over (after a grant, so one grant is not counted twice): its
        votes, and its motion cue, which the next grant must show again."""
        track.votes.clear()
        if track.cue is not None:
            track.cue.reset()

    @property
    def tracks(self) -> list[Track]:
        return list(self._tracks)
