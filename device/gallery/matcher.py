"""Match a probe embedding against every template of one model, held in memory.

All templates sit in one (n, dim) matrix whose rows have unit length, so one matrix-vector
product gives every cosine similarity. Rows are grouped by person, so each person's
templates form one run: :meth:`Matcher.search` takes the best score per person with
``np.maximum.reduceat`` over the runs, and :meth:`Matcher.decide`, which needs only the best
two people, blanks out the best person's run and looks again. No Python loop over templates,
and a person with many templates counts once, in the top k and in the margin rule.

Speed and memory, measured by ``bench/bench_search.py`` (100,000 templates of 128 numbers, a
2-CPU x86 VM with about 21 GB/s of read bandwidth, the other CPU busy): the product reads
the whole matrix once per probe, so memory bandwidth is the limit. float32 (49 MiB) takes
about 3 ms a probe against a limit of 2.5 ms. numpy has no BLAS for float16 (``m16 @ p``:
60 ms) and its float16 -> float32 cast is slow too (26 ms in blocks), so float16 rows are
widened about 2 MiB at a time by three integer ufuncs, exactly (see the constants below),
and then multiplied: about 5 to 7.5 ms, bound by the widening, not by memory. float32 is
therefore the faster and the default; float16 halves the memory (a million templates:
244 MiB instead of 488), for a board where that matters more than a few milliseconds.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

# Widening float16 bits x to float32: sign-extend x to 32 bits and shift left by 13, which
# puts its 5-bit exponent and 10-bit mantissa in the float32 fields, then keep bit 31 (the
# sign) and bits 27..13 and clear the three sign-extension bits in between. The float32 read
# from those bits is the float16 value times 2**-112 (exact, subnormals included), so the
# probe is scaled by 2**112 instead of scaling the matrix. Infinities and NaNs would come
# out finite, but rows are checked finite before they are stored.
_F16_KEEP = np.array(0x8FFFE000, dtype=np.uint32).view(np.int32)
_F16_SCALE = np.float32(2.0**112)
# About 2 MiB of widened rows at a time: large enough to spread einsum's fixed cost (some
# 15 us a call) over many rows, small enough to stay in cache between the widening and the
# product. Measured best of 0.5 to 8 MiB on a 2 MiB-L2 x86; measure again on a Pi 4 (1 MiB).
_BLOCK_BYTES = 2 << 20
# search_many() scores this many bytes of (templates x probes) at a time.
_SCORE_BLOCK_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class Candidate:
    """A person and their best cosine similarity to the probe, in [-1, 1]."""

    person_id: str
    score: float


@dataclass(frozen=True, slots=True)
class Match:
    """The open-set decision for one probe.

    ``person_id`` is set only when ``decision`` is "match". ``score`` is the best person's
    score and ``closest_id`` that person (also when the decision is "unknown", for the
    event log); ``runner_up_score`` is the best score of anyone else, -1.0 when there is
    nobody else. With an empty gallery, both scores are -1.0 and ``closest_id`` is None.
    """

    person_id: str | None
    score: float
    runner_up_score: float
    decision: Literal["match", "unknown"]
    closest_id: str | None


class Matcher:
    """Every template of ONE model, ready to be searched.

    ``person_ids[i]`` owns row i of ``embeddings`` (n, dim); rows need not arrive grouped
    (they are grouped here). Rows are scaled to unit length again on load, because a cosine
    is only a dot product for unit vectors and the rows came from a file; a row of zeros
    (which the embedder emits for nothing to encode) stays zero and scores 0 against
    everything. ``dtype`` is float32 or float16 (see the module notes; float16 also rounds
    numbers below 6.1e-5 to zero, each moving a score by at most 6.1e-5 times the probe's
    matching number: a few of the 128 in a row, if any).

    Searches may come from several threads: they share scratch buffers and take turns.
    """

    def __init__(
        self,
        person_ids: Sequence[str],
        embeddings: np.ndarray,
        dtype: type[np.floating] | np.dtype = np.float32,
    ) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float16):
            raise ValueError(f"the matcher stores float32 or float16, not {self.dtype}")
        matrix = np.asarray(embeddings)
        if matrix.ndim != 2 or matrix.shape[0] != len(person_ids):
            raise ValueError(
                f"need an (n, dim) matrix with one row per person id: got {matrix.shape} "
                f"for {len(person_ids)} ids"
            )
        order, self._people, self._starts = _group(person_ids)
        self._stops = np.append(self._starts[1:], len(person_ids))
        # Fancy indexing makes the copy that is then scaled in place: the caller's array is
        # left alone and a large gallery is not copied twice.
        rows = _scale_to_unit_rows(np.asarray(matrix, dtype=np.float32)[order])
        if self.dtype == np.float16:
            rows = rows.astype(np.float16)
            # float16 subnormals would become float32 subnormals when widened, which some
            # CPUs multiply a hundred times more slowly than normal numbers.
            rows[np.abs(rows) < np.finfo(np.float16).smallest_normal] = 0
        rows.flags.writeable = False
        self._matrix = rows
        self.dim = int(rows.shape[1])
        self._lock = threading.Lock()
        self._scores = np.empty(len(rows), np.float32)
        self._best = np.empty(len(self._people), np.float32)
        block_rows = min(len(rows), max(1, _BLOCK_BYTES // (4 * max(self.dim, 1))))
        self._block = np.empty((block_rows if self.dtype == np.float16 else 0, self.dim), np.int32)

    def __len__(self) -> int:
        """The number of templates (rows)."""
        return int(self._matrix.shape[0])

    @property
    def person_count(self) -> int:
        return len(self._people)

    @property
    def matrix(self) -> np.ndarray:
        """The stored rows (read-only, in ``dtype``), grouped by person in order of first
        appearance in ``person_ids``."""
        return self._matrix

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays the matcher holds: the matrix and its scratch buffers."""
        arrays = (self._matrix, self._scores, self._best, self._block, self._starts, self._stops)
        return sum(array.nbytes for array in arrays)

    def search(self, probe: np.ndarray, top_k: int = 5) -> list[Candidate]:
        """The ``top_k`` people most like ``probe`` (dim,), best first, one entry per person.

        Empty gallery: an empty list. The probe is scaled to unit length (zeros stay zero).
        """
        query = self._query(probe)
        if not self._people:
            return []
        with self._lock:
            best = self._best_per_person(query)
            people, scores = _top_k(best[:, None], top_k)
        return [
            Candidate(self._people[i], float(s))
            for i, s in zip(people[:, 0], scores[:, 0], strict=True)
        ]

    def decide(self, probe: np.ndarray, threshold: float, margin: float) -> Match:
        """Accept the best person only if their score is at least ``threshold`` AND at least
        ``margin`` above everyone else's; otherwise "unknown".

        The margin makes this an open-set decision: a face about as close to two different
        people is not let in as either, since a stranger who looks like two enrolled people
        (or identical twins) is the likely false accept. Scores are cosines in [-1, 1].
        """
        query = self._query(probe)
        if not self._people:
            return Match(None, -1.0, -1.0, "unknown", None)
        with self._lock:
            scores = self._scores
            self._scores_into(query, scores)
            # Only the best two people matter here, so instead of a max per person (reduceat
            # costs about 25 ns a person, 0.5 ms for 20,000) take the best row, blank out its
            # owner's run of rows, and take the best row again.
            best_row = int(np.argmax(scores))
            first = int(np.searchsorted(self._starts, best_row, side="right")) - 1
            score = float(scores[best_row])
            scores[self._starts[first] : self._stops[first]] = -np.inf  # scratch: reused
            runner_up = float(scores.max()) if len(self._people) > 1 else -1.0
        closest = self._people[first]
        accepted = score >= threshold and score - runner_up >= margin
        if accepted:
            return Match(closest, score, runner_up, "match", closest)
        return Match(None, score, runner_up, "unknown", closest)

    def search_many(self, probes: np.ndarray, top_k: int = 5) -> list[list[Candidate]]:
        """:meth:`search` for each row of ``probes`` (n, dim), with matrix-matrix products:
        for evaluation, where thousands of probes are searched at once."""
        queries = self._queries(probes)
        if not self._people:
            return [[] for _ in range(len(queries))]
        per_block = max(1, _SCORE_BLOCK_BYTES // (4 * len(self)))
        results: list[list[Candidate]] = []
        for start in range(0, len(queries), per_block):
            block = queries[start : start + per_block]
            scores = np.empty((len(self), len(block)), np.float32)
            with self._lock:
                self._scores_into(block.T, scores)
            best = np.maximum.reduceat(scores, self._starts, axis=0)
            people, top_scores = _top_k(best, top_k)
            for column in range(len(block)):
                pairs = zip(people[:, column], top_scores[:, column], strict=True)
                results.append([Candidate(self._people[i], float(s)) for i, s in pairs])
        return results

    # --- Private ---------------------------------------------------------------------------

    def _query(self, probe: np.ndarray) -> np.ndarray:
        array = np.asarray(probe)
        if array.ndim != 1:
            raise ValueError(f"a probe is one (dim,) vector, got shape {array.shape}")
        return self._queries(array[None])[0]

    def _queries(self, probes: np.ndarray) -> np.ndarray:
        array = np.asarray(probes)
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"probes must be (n, dim) floats, got {array.dtype} {array.shape}")
        if len(self) and array.shape[1] != self.dim:
            raise ValueError(
                f"probes have {array.shape[1]} numbers, the gallery's templates {self.dim}"
            )
        return _scale_to_unit_rows(array.astype(np.float32))

    def _best_per_person(self, query: np.ndarray) -> np.ndarray:
        self._scores_into(query, self._scores)
        return np.maximum.reduceat(self._scores, self._starts, out=self._best)

    def _scores_into(self, queries: np.ndarray, out: np.ndarray) -> None:
        """Cosines of every row with ``queries`` (dim,) or (dim, k), into ``out`` (n[, k])."""
        if self.dtype == np.float32:
            _product(self._matrix, queries, out)
        else:
            self._float16_scores_into(queries * _F16_SCALE, out)

    def _float16_scores_into(self, scaled_queries: np.ndarray, out: np.ndarray) -> None:
        bits = self._matrix.view(np.int16)
        block = self._block
        widened = block.view(np.float32)
        step = len(block)
        for start in range(0, len(bits), step):
            stop = min(start + step, len(bits))
            rows = block[: stop - start]
            np.copyto(rows, bits[start:stop])  # int16 -> int32 sign-extends
            np.left_shift(rows, 13, out=rows)
            np.bitwise_and(rows, _F16_KEEP, out=rows)
            _product(widened[: stop - start], scaled_queries, out[start:stop])


def _product(rows: np.ndarray, queries: np.ndarray, out: np.ndarray) -> None:
    """``out = rows @ queries``, for one probe (dim,) or several (dim, k).

    One probe goes through numpy's own SIMD loop (einsum), on one core. BLAS (np.dot) is no
    faster for a matrix-vector product, which memory bandwidth limits, but it splits the work
    over every core and then waits for the slowest: with the other core of a 2-CPU machine
    busy, 6 to 8 ms instead of 2 to 3 ms for 100,000 templates. On the door the other cores are
    the TFLite interpreter's. Several probes make a matrix-matrix product, where BLAS wins.
    """
    if queries.ndim == 1:
        np.einsum("ij,j->i", rows, queries, out=out)
    else:
        np.dot(rows, queries, out=out)


def _group(person_ids: Sequence[str]) -> tuple[np.ndarray, list[str], np.ndarray]:
    """The row order that groups rows by person (stable), the people in that order, and
    where each person's run of rows starts."""
    codes: dict[str, int] = {}
    row_codes = np.fromiter(
        (codes.setdefault(person_id, len(codes)) for person_id in person_ids),
        dtype=np.intp,
        count=len(person_ids),
    )
    order = np.argsort(row_codes, kind="stable")
    sorted_codes = row_codes[order]
    starts = np.flatnonzero(np.diff(sorted_codes, prepend=-1))
    # Codes were handed out in order of first appearance, so sorting by them keeps that order.
    return order, list(codes), starts


def _scale_to_unit_rows(rows: np.ndarray) -> np.ndarray:
    """Scale every nonzero row of the float32 matrix ``rows`` to unit length, in place."""
    # einsum, not np.linalg.norm: no temporary the size of the matrix. A NaN or infinity
    # anywhere in a row makes its squared norm non-finite.
    squared = np.einsum("ij,ij->i", rows, rows)
    if not np.all(np.isfinite(squared)):
        raise ValueError("embeddings contain NaN or infinity")
    norms = np.sqrt(squared)[:, None]
    np.divide(rows, norms, out=rows, where=norms > 0)
    return rows


def _top_k(best: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """The indices and values of the ``top_k`` largest of each column of ``best`` (P, m),
    best first: two (k, m) arrays with k = min(top_k, P)."""
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    k = min(top_k, len(best))
    picked = np.argpartition(-best, k - 1, axis=0)[:k]
    values = np.take_along_axis(best, picked, axis=0)
    order = np.argsort(-values, axis=0, kind="stable")
    return np.take_along_axis(picked, order, axis=0), np.take_along_axis(values, order, axis=0)
