"""Gallery: who the door knows (``store``, one SQLite file) and whom a face is (``matcher``).

``Gallery`` keeps people and their face templates; ``Matcher`` holds one model's templates in
memory and makes the open-set decision for a probe.
"""

from device.gallery.matcher import Candidate, Match, Matcher
from device.gallery.store import Gallery, Person, PersonSummary, Template

__all__ = ["Candidate", "Gallery", "Match", "Matcher", "Person", "PersonSummary", "Template"]
