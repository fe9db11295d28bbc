"""Identification: faces in a frame -> who they are, or "unknown", against the gallery.

The matcher holds every template of the active model in memory; it is rebuilt when the
gallery's change counter moves, so people enrolled elsewhere (CLI, web page) are seen without
a restart.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from device.errors import ModelMismatch
from device.gallery.matcher import Matcher
from device.gallery.store import Gallery, Person
from device.vision.models import DEFAULT_EMBEDDER
from device.vision.pipeline import Face, FacePipeline


@dataclass(frozen=True)
class Decision:
    """The open-set decision for one face: the threshold it is taken at, and the margin.

    A stranger has as many chances to resemble someone as there are people enrolled, so the
    threshold that keeps the share of strangers accepted (FPIR) at the card's target grows
    with the gallery: the card's ``by_gallery_size`` curve, ``[[people, threshold], ...]``,
    calibrated on tens of thousands of stranger searches (docs/recognition.md, "Open-set
    calibration"). :meth:`threshold_for` reads it, linear in log10(people) and clamped at
    the ends. A threshold set by hand (configuration or settings page) is used as it is, for
    every gallery size.
    """

    threshold: float  # minimum cosine to the best person (the card's, at 1,000 people)
    margin: float  # minimum lead of the best person over the next-best person
    by_gallery_size: tuple[tuple[int, float], ...] = ()  # empty: ``threshold`` everywhere
    target_fpir: float | None = None  # the share of strangers the curve was set to accept

    @classmethod
    def from_card(cls, card_threshold: dict, threshold: float | None = None,
                  margin: float | None = None) -> Decision:
        curve = () if threshold is not None else tuple(
            (int(n), float(t)) for n, t in card_threshold.get("by_gallery_size", ()))
        return cls(
            threshold=card_threshold["score"] if threshold is None else threshold,
            margin=card_threshold.get("margin", 0.0) if margin is None else margin,
            by_gallery_size=curve,
            target_fpir=card_threshold.get("fpir") if threshold is None else None,
        )

    def threshold_for(self, people: int) -> float:
        """The threshold in force with ``people`` enrolled."""
        curve = self.by_gallery_size
        if not curve:
            return self.threshold
        sizes = [math.log10(max(n, 1)) for n, _ in curve]
        return float(np.interp(math.log10(max(people, 1)), sizes, [t for _, t in curve]))


def embedder_name(gallery: Gallery, configured: str | None) -> str:
    """The embedder to run on this gallery: the one its templates belong to.

    ``configured`` is ``recognition.model`` (None or "" when not set). A gallery enrolled
    with one model and a configuration naming another would leave the door matching faces
    against nothing, so that stops here with what to do.
    """
    gallery_model = gallery.model
    if configured and gallery_model and configured != gallery_model:
        raise ModelMismatch(
            f"the gallery's templates are for {gallery_model} but recognition.model is "
            f"{configured}: run `facegate reembed --model {configured}` to move the gallery, "
            f"or set recognition.model = \"{gallery_model}\"")
    return configured or gallery_model or DEFAULT_EMBEDDER


@dataclass(frozen=True)
class Identification:
    face: Face
    person_id: str | None
    person_name: str | None
    active: bool | None  # whether the matched person may use the door (None: no match)
    score: float  # best cosine over the gallery (-1.0 with an empty gallery)
    runner_up_score: float
    decision: str  # "match" | "unknown"


log = logging.getLogger(__name__)

# Given a model's name: the pipeline that runs it and the decision for its card.
ModelLoader = Callable[[str], tuple[FacePipeline, Decision]]


class Identifier:
    """Who the faces are, against the gallery's templates of the pipeline's model.

    ``load_model``: when the gallery moves to another model (``facegate reembed`` while the
    door runs), the identifier loads that model's pipeline and decision with it and goes on;
    without it (or when loading fails) it keeps its pipeline and logs why nobody matches.
    """

    def __init__(self, pipeline: FacePipeline, gallery: Gallery, decision: Decision, *,
                 load_model: ModelLoader | None = None) -> None:
        self.pipeline = pipeline
        self.gallery = gallery
        self.decision = decision
        self._load_model = load_model
        self._matcher: Matcher | None = None
        self._people: dict[str, Person] = {}
        self._seen_change = -1
        self._seen_model: str | None = None

    def refresh(self) -> None:
        """Reload the templates if the gallery changed since the last call (cheap otherwise)."""
        change = self.gallery.change_seq()
        if change == self._seen_change and self._matcher is not None:
            return
        self._follow_gallery_model()
        # Inactive people stay in the matrix: a deactivated person is then recognised (and
        # refused by the door) rather than matched to whoever is next closest.
        person_ids, _, embeddings = self.gallery.embeddings(self.pipeline.model_name)
        dim = self.pipeline.embedder.dim
        if len(person_ids) and embeddings.shape[1] != dim:
            # A gallery file edited by hand: matching would fail at every face.
            log.error("the gallery's %s templates are %d numbers long but the embedder makes "
                      "%d: nobody will match until they are re-enrolled",
                      self.pipeline.model_name, embeddings.shape[1], dim)
            person_ids = []
        if not len(person_ids):
            embeddings = np.zeros((0, dim), np.float32)
        self._matcher = Matcher(person_ids, embeddings)
        self._people = {p.id: p for p in self.gallery.list_people()}
        self._seen_change = change

    def _follow_gallery_model(self) -> None:
        model = self.gallery.model
        if model is None or model == self.pipeline.model_name or model == self._seen_model:
            return
        self._seen_model = model
        if self._load_model is None:
            log.error("the gallery's templates are now for %s but this process runs %s: "
                      "nobody will match until it is restarted", model, self.pipeline.model_name)
            return
        try:
            self.pipeline, self.decision = self._load_model(model)
        except Exception as exc:  # the door keeps running (and refusing) on the old model
            log.error("the gallery moved to %s but it cannot be loaded (%s): nobody will "
                      "match until this is fixed", model, exc)
            return
        log.info("the gallery moved to model %s: now running it", model)

    def person(self, person_id: str) -> Person | None:
        """The person as of the last refresh (None if removed since)."""
        self.refresh()
        return self._people.get(person_id)

    @property
    def threshold(self) -> float:
        """The threshold in force for the gallery as last loaded."""
        self.refresh()
        return self.decision.threshold_for(self._matcher.person_count)

    def identify_faces(self, faces: list[Face]) -> list[Identification]:
        threshold = self.threshold
        results = []
        for face in faces:
            match = self._matcher.decide(face.embedding, threshold, self.decision.margin)
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
