"""The decision loop: one frame at a time, from the camera to the relay and the access log.

Each frame: read (a camera that is down gives None: the door stays locked, the watchdog is
still fed), find and identify the nearest faces, judge whether each is live (when the
liveness check is on), vote per tracked face, then for a winner check the person's access
rules and either grant (relay first, log second) or deny; a track judged a presentation
attack is logged as ``attack`` and never opens. With ``liveness.motion_cue`` a track that
has its votes waits, unlogged but for one line in the daemon's log, for a blink or a head
turn (``device/daemon/cues.py``). Door sensor events arrive from gpiozero's
threads through a queue and are logged here, so only this thread touches the database.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from device.camera import EndOfStream, Frame
from device.daemon.access import access_refusal
from device.daemon.cues import CueRule, CueSample
from device.daemon.live import LiveFrames
from device.daemon.systemd import Notifier
from device.daemon.votes import Verdict, Vote, VoteTracker
from device.door import Door
from device.events import EventLog
from device.gallery.store import Person
from device.identification import Decision, Identification, Identifier
from device.liveness import Liveness, LivenessCheck, LivenessSettings, attack_sentence
from device.vision.quality import QualityGate

log = logging.getLogger(__name__)

RETENTION_EVERY_SECONDS = 60.0
SNAPSHOT_MARGIN = 0.25  # share of the face box added on each side of the face snapshot


@dataclass(frozen=True)
class LoopSettings:
    min_interocular_px: float = 40.0
    max_faces: int = 3
    cooldown_seconds: float = 5.0
    votes_needed: int = 2
    votes_window: int = 3


class DoorLoop:
    """Turns frames into door decisions. Built from parts, so tests hand in their own.

    ``liveness``: the presentation-attack check (its ``enabled`` is read at every frame, so
    the settings page may turn it on or off); None: no check at all, as before it existed.
    """

    def __init__(
        self,
        *,
        camera: Any,  # read() -> Frame | None; None while the camera is down
        identifier: Identifier,
        door: Door,
        events: EventLog,
        settings: LoopSettings,
        door_events: queue.Queue | None = None,
        notifier: Notifier | None = None,
        live: LiveFrames | None = None,
        liveness: LivenessCheck | None = None,
        clock: Callable[[], float] = time.monotonic,
        local_time: Callable[[], datetime] = lambda: datetime.now().astimezone(),
    ) -> None:
        self.camera = camera
        self.identifier = identifier
        self.door = door
        self.events = events
        self.settings = settings
        self.door_events = door_events if door_events is not None else queue.Queue()
        self.notifier = notifier or Notifier({})
        self.live = live
        self.liveness = liveness
        self.clock = clock
        self.local_time = local_time
        self.gate = QualityGate(min_interocular_px=settings.min_interocular_px)
        self.tracker = VoteTracker(settings.votes_needed, settings.votes_window,
                                   self._live_needed(), self._cue_rule())
        self._quiet_until: dict[str, float] = {}  # person id -> end of their cool-down
        self._attack_quiet_until: dict[str, float] = {}  # resembled person id -> the same
        self._next_retention = clock() + RETENTION_EVERY_SECONDS
        self.frames = 0
        self.grants = 0
        # Called with the monotonic time once per step (the daemon polls site settings here).
        self.on_each_frame: Callable[[float], None] | None = None
        # A refusal beside the person's own access rules (a member door's replica too old:
        # device.site.member.SiteLink.refusal); None: none.
        self.extra_refusal: Callable[[Person], str | None] | None = None

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Process frames until ``stop`` is set or a replay ends (``EndOfStream``)."""
        while not stop.is_set():
            try:
                if not self.step():
                    return
            except EndOfStream:
                log.info("the replay has ended")
                return

    def step(self) -> bool:
        """One frame. Returns False only when the camera has nothing more to give."""
        self.notifier.watchdog()
        self._log_door_events()
        frame = self.camera.read()
        if frame is not None:
            self.frames += 1
            self._decide(frame)
        if self.on_each_frame is not None:
            try:
                self.on_each_frame(self.clock())
            except Exception:  # a settings problem must never stop the door
                log.exception("per-frame hook failed")
        if self.clock() >= self._next_retention:
            self._next_retention = self.clock() + RETENTION_EVERY_SECONDS
            try:
                self.events.enforce()
            except Exception:  # retention must never stop the door
                log.exception("retention failed; will try again in a minute")
        return True

    def apply(self, settings: LoopSettings, decision: Decision | None = None,
              liveness: LivenessSettings | None = None) -> None:
        """New settings while running (from the settings page); votes restart from zero
        when the votes asked for change. ``liveness``: new settings for the liveness check
        (a model is loaded on the next frame that needs it)."""
        if liveness is not None:
            if self.liveness is not None:
                self.liveness.configure(liveness)
            elif liveness.enabled:
                log.warning("liveness turned on, but this door loop was built without a "
                            "liveness check: it takes effect after a restart")
        self.settings = settings
        self._follow_votes()
        self.gate = QualityGate(min_interocular_px=settings.min_interocular_px)
        if decision is not None:
            self.identifier.decision = decision

    def _live_needed(self) -> int | None:
        """The liveness K for the current settings; None when the check is off."""
        if self.liveness is None or not self.liveness.enabled:
            return None
        return self.liveness.votes_needed(self.settings.votes_window)

    def _cue_rule(self) -> CueRule | None:
        """The motion cue tracks must show; None when none is asked for or the liveness
        check is off (the cue is part of it)."""
        if self._live_needed() is None:
            return None
        settings = self.liveness.settings
        if settings.motion_cue == "off":
            return None
        return CueRule(settings.motion_cue, settings.head_turn_parallax, settings.blink_drop)

    def _follow_votes(self) -> None:
        """A new tracker (votes from zero) when K, M, the liveness K or the motion cue have
        changed."""
        wanted = (self.settings.votes_needed, self.settings.votes_window, self._live_needed(),
                  self._cue_rule())
        tracker = self.tracker
        if wanted != (tracker.needed, tracker.window, tracker.live_needed, tracker.cue):
            self.tracker = VoteTracker(*wanted)

    # -- deciding ---------------------------------------------------------------------------

    def _decide(self, frame: Frame) -> None:
        faces = self.identifier.pipeline.process(
            frame.image, max_faces=self.settings.max_faces,
            min_interocular_px=self.settings.min_interocular_px)
        identifications = self.identifier.identify_faces(faces)
        if self.live is not None:
            self.live.publish(frame.image, identifications)
        self._follow_votes()  # the liveness check may have been turned on or off
        checking = self.tracker.live_needed is not None
        cue = self.tracker.cue
        observations = [(found, self._vote(found, frame if checking else None, cue))
                        for found in identifications]
        for verdict in self.tracker.update(observations):
            if verdict.winner is not None:
                self._act_on_winner(verdict, frame)
            elif verdict.awaiting_cue and not verdict.track.cue_wait_logged:
                self._log_waiting(verdict)
            elif verdict.attack and not verdict.track.decided:
                verdict.track.decided = True
                self._act_on_attack(verdict, frame)
            elif verdict.stranger and not verdict.track.decided:
                verdict.track.decided = True
                self._record("unknown", verdict.track.latest, frame,
                             reason=verdict.track.votes[-1].refusal or "stranger",
                             liveness=verdict.track.votes[-1].liveness)
                self.door.deny()

    def _vote(self, found: Identification, frame: Frame | None,
              cue: CueRule | None = None) -> Vote:
        """This frame's vote for the face; ``frame`` given: judge its liveness too, and
        with ``cue`` measure the face for that motion cue (a good enough face only)."""
        liveness = None
        if frame is not None and self.liveness is not None:
            liveness = self.liveness.judge(frame.image, found.face.box)
        problems = self.gate.problems(found.face.quality)
        if problems:
            return Vote(None, found.score, "low quality: " + "; ".join(problems), liveness,
                        good_quality=False)
        sample = None
        if frame is not None and cue is not None:
            sample = CueSample.measure(frame.image, found.face.landmarks, cue)
        if found.decision != "match":
            return Vote(None, found.score, "stranger", liveness, cue=sample)
        return Vote(found.person_id, found.score, None, liveness, cue=sample)

    def _log_waiting(self, verdict: Verdict) -> None:
        """Once per track: who is waiting for the motion cue (no event: not an attack)."""
        verdict.track.cue_wait_logged = True
        person = self.identifier.person(verdict.resembles) if verdict.resembles else None
        log.info("%s is recognised and live; the door opens after %s (liveness.motion_cue)",
                 person.name if person else "a face", self.tracker.cue.words)

    def _act_on_winner(self, verdict: Verdict, frame: Frame) -> None:
        person_id = verdict.winner
        now = self.clock()
        liveness = _latest_liveness(verdict)  # before the votes are forgotten
        cue = _cue_detail(verdict)
        self.tracker.forget(verdict.track)
        if now < self._quiet_until.get(person_id, 0.0):
            return  # still standing there after their grant (or denial): no repeat
        self._quiet_until[person_id] = now + self.settings.cooldown_seconds
        person = self.identifier.person(person_id)
        refusal = "removed" if person is None else access_refusal(person, self.local_time())
        if refusal is None and self.extra_refusal is not None:
            refusal = self.extra_refusal(person)
        if refusal is None:
            self.door.grant()  # the relay first: logging must never delay the door
            self.grants += 1
            self._record("granted", verdict.track.latest, frame, liveness=liveness,
                         extra=cue)
        else:
            self.door.deny()
            self._record("denied", verdict.track.latest, frame, reason=refusal,
                         liveness=liveness, extra=cue)

    def _act_on_attack(self, verdict: Verdict, frame: Frame) -> None:
        """A photo or a screen held up: red light, one ``attack`` event, never the relay.

        The same person's likeness is logged again only after ``cooldown_seconds`` (a photo
        moved out of view and back is one attempt); the red light shows every time."""
        self.door.deny()
        resembles = verdict.resembles
        if resembles is not None:
            now = self.clock()
            if now < self._attack_quiet_until.get(resembles, 0.0):
                return
            self._attack_quiet_until[resembles] = now + self.settings.cooldown_seconds
        person = self.identifier.person(resembles) if resembles is not None else None
        votes = verdict.track.votes
        liveness = _latest_liveness(verdict)
        history = [_liveness_score(vote) for vote in votes]
        self._record(
            "attack", verdict.track.latest, frame, reason=attack_sentence(liveness),
            liveness=liveness, person_id=person.id if person else None,
            person_name=person.name if person else None,
            score=max((v.score for v in votes if person and v.person_id == person.id),
                      default=None),
            extra={"liveness_votes": history, "liveness_needed": self.tracker.live_needed,
                   "liveness_model": self.liveness.model_name if self.liveness else None})
        log.warning("presentation attack at the door, resembling %s: liveness %s",
                    person.name if person else "nobody enrolled",
                    ", ".join("-" if score is None else f"{score:.2f}" for score in history))

    # -- logging ----------------------------------------------------------------------------

    def _record(self, kind: str, found: Identification, frame: Frame,
                reason: str | None = None, *, liveness: Liveness | None = None,
                person_id: str | None = None, person_name: str | None = None,
                score: float | None = None, extra: dict[str, Any] | None = None) -> None:
        """Log a face decision with the face's snapshot. The person is the face's match
        (none for ``unknown``) unless given; ``score`` the face's best cosine unless given."""
        if kind in ("granted", "denied"):
            person_id, person_name = found.person_id, found.person_name
        score = found.score if score is None else score
        detail: dict[str, Any] = {"runner_up_score": round(found.runner_up_score, 4),
                                  "quality": found.face.quality.as_dict()}
        if liveness is not None:
            detail["liveness"] = None if liveness.score is None else round(liveness.score, 4)
            detail["liveness_threshold"] = liveness.threshold
        detail.update(extra or {})
        self.events.record(
            kind,
            person_id=person_id,
            person_name=person_name,
            score=round(score, 4) if score > -1.0 else None,  # -1: empty gallery
            reason=reason,
            face_crop=face_snapshot(frame.image, found.face.box),
            frame=frame.image,
            detail=detail,
        )

    def _log_door_events(self) -> None:
        while True:
            try:
                kind, detail = self.door_events.get_nowait()
            except queue.Empty:
                return
            self.events.record(kind, reason=detail.get("by"), detail=_plain(detail))


def _liveness_score(vote: Vote) -> float | None:
    score = None if vote.liveness is None else vote.liveness.score
    return None if score is None else round(score, 4)


def _latest_liveness(verdict: Verdict) -> Liveness | None:
    """The newest of the track's liveness verdicts that has a score (else the newest)."""
    judged = [v.liveness for v in verdict.track.votes if v.liveness is not None]
    scored = [item for item in judged if item.score is not None]
    return (scored or judged or [None])[-1]


def _cue_detail(verdict: Verdict) -> dict[str, Any] | None:
    """The motion cue the track showed, for the event's detail (None: no cue asked for)."""
    watch = verdict.track.cue
    if watch is None:
        return None
    detail: dict[str, Any] = {"motion_cue": watch.rule.kind, "motion_cue_seen": watch.seen}
    if watch.rule.watches_turn:
        detail["head_turn_parallax"] = round(watch.parallax, 3)
    return detail


def face_snapshot(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The face with some context around it, as a person would crop it for the log."""
    x1, y1, x2, y2 = box
    pad_x, pad_y = (x2 - x1) * SNAPSHOT_MARGIN, (y2 - y1) * SNAPSHOT_MARGIN
    height, width = image.shape[:2]
    left, top = int(max(0, x1 - pad_x)), int(max(0, y1 - pad_y))
    right, bottom = int(min(width, x2 + pad_x)), int(min(height, y2 + pad_y))
    return image[top:bottom, left:right].copy()


def _plain(detail: dict[str, Any]) -> dict[str, Any]:
    """Door event details as JSON-friendly values (monotonic ``until`` becomes seconds left)."""
    plain = {}
    for key, value in detail.items():
        if key == "until" and isinstance(value, float):
            plain["seconds_left"] = round(value - time.monotonic(), 2)
        elif isinstance(value, str | int | float | bool) or value is None:
            plain[key] = value
        else:
            plain[key] = str(value)
    return plain
