"""Identification: faces in a frame -> who they are, or "unknown", against the gallery.

The matcher holds every template of the active model in memory; it is rebuilt when the
gallery's change counter moves, so people enrolled elsewhere (CLI, web page) are seen without
a restart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from device.gallery.matcher import Matcher
from device.gallery.store import Gallery, Person
from device.vision.pipeline import Face, FacePipeline


@dataclass(frozen=True)
class Decision:
    """The open-set decision for one face, with the threshold it was taken at."""

    threshold: float  # minimum cosine to the best person
    margin: float  # minimum lead of the best person over the next-best person

    @classmethod
    def from_card(cls, card_threshold: dict, threshold: float | None = None,
                  margin: float | None = None) -> Decision:
        return cls(
            threshold=card_threshold["score"] if threshold is None else threshold,
            margin=card_threshold.get("margin", 0.0) if margin is None else margin,
        )


@dataclass(frozen=True)
class Identification:
    face: Face
    person_id: str | None
    person_name: str | None
    active: bool | None  # whether the matched person may use the door (None: no match)
    score: float  # best cosine over the gallery (-1.0 with an empty gallery)
    runner_up_score: float
    decision: str  # "match" | "unknown"


class Identifier:
    def __init__(self, pipeline: FacePipeline, gallery: Gallery, decision: Decision) -> None:
        self.pipeline = pipeline
        self.gallery = gallery
        self.decision = decision
        self._matcher: Matcher | None = None
        self._people: dict[str, Person] = {}
        self._seen_change = -1

    def refresh(self) -> None:
        """Reload the templates if the gallery changed since the last call (cheap otherwise)."""
        change = self.gallery.change_seq()
        if change == self._seen_change and self._matcher is not None:
            return
        # Inactive people stay in the matrix: a deactivated person is then recognised (and
        # refused by the door) rather than matched to whoever is next closest.
        person_ids, _, embeddings = self.gallery.embeddings(self.pipeline.model_name)
        if not len(person_ids):
            embeddings = np.zeros((0, self.pipeline.embedder.dim), np.float32)
        self._matcher = Matcher(person_ids, embeddings)
        self._people = {p.id: p for p in self.gallery.list_people()}
        self._seen_change = change

    def person(self, person_id: str) -> Person | None:
        """The person as of the last refresh (None if removed since)."""
        self.refresh()
        return self._people.get(person_id)

    def identify_faces(self, faces: list[Face]) -> list[Identification]:
        self.refresh()
        results = []
        for face in faces:
            match = self._matcher.decide(face.embedding, self.decision.threshold,
                                         self.decision.margin)
            person = self._people.get(match.person_id) if match.person_id else None
            results.append(Identification(
                face=face,
                person_id=match.person_id,
                person_name=person.name if person else None,
                active=person.active if person else None,
                score=match.score,
                runner_up_score=match.runner_up_score,
                decision=match.decision,
            ))
        return results

    def identify(self, frame: np.ndarray, *, thorough: bool = False) -> list[Identification]:
        return self.identify_faces(self.pipeline.process(frame, thorough=thorough))
