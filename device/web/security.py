"""What protects every request: CSRF tokens, security headers, and the sign-in rate limit.

- CSRF: one random token per session, required on every POST/PUT/PATCH/DELETE (as the form
  field ``csrf_token`` or the ``X-CSRF-Token`` header), except API requests that carry a
  bearer token (no cookie is involved, so no cross-site request can forge one). Templates
  write the field with ``{{ csrf_field() }}``.
- Headers on every response: a Content-Security-Policy without inline script or style (all
  of it is in ``static/``), no framing, no MIME sniffing, the referrer kept on this site;
  pages are ``Cache-Control: no-store`` since most show people's faces and names.
- Sign-in attempts: at most ``LOGIN_RATE_LIMIT`` failures per ``LOGIN_RATE_WINDOW_SECONDS``
  per client address and per account name, counted in memory (a sliding window): it resets
  when the daemon restarts, and each process counts its own, which is enough for one door.
  An attempt takes its place in the count *before* its password is checked
  (:meth:`SlidingWindowLimiter.acquire`, one lock for the check and the count), and gives it
  back only when the password was right, so parallel guesses cannot all slip past the check
  while the first ones are still being hashed.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable

from flask import Flask, Response, current_app, request, session
from markupsafe import Markup
from werkzeug.exceptions import BadRequest

CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
FORM_EXPIRED = "This form has expired; reload the page and try again."


class CsrfRefused(BadRequest):
    """A form arrived without this session's CSRF token (stale page, expired session, or
    a request forged by another site)."""

    description = FORM_EXPIRED


def csrf_token() -> str:
    """This session's CSRF token, created on first use."""
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def csrf_field() -> Markup:
    """The hidden form field carrying the CSRF token (a Jinja global)."""
    return Markup('<input type="hidden" name="csrf_token" value="{}">').format(csrf_token())


# Endpoints that take a whole database: their limit is MAX_RESTORE_BYTES, set here because
# checking the CSRF field reads (and so bounds) the form before the view runs.
DATABASE_UPLOADS = frozenset({"settings.restore", "api.restore"})
MAX_RESTORE_BYTES = 1 << 30


def check_csrf() -> None:
    """Refuse an unsafe request without the session's token (``before_request``)."""
    if request.method not in UNSAFE_METHODS:
        return
    if request.endpoint in DATABASE_UPLOADS:
        request.max_content_length = current_app.config.get("MAX_RESTORE_BYTES",
                                                            MAX_RESTORE_BYTES)
    if request.path.startswith(("/api/", "/sync/")) and _bearer():
        return  # a token sent by a script or a door, never by a browser on its own
    sent = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD, "")
    expected = session.get("csrf", "")
    if not (sent and expected and hmac.compare_digest(sent.encode(), expected.encode())):
        raise CsrfRefused()


def _bearer() -> bool:
    return request.headers.get("Authorization", "").lower().startswith("bearer ")


def add_headers(response: Response) -> Response:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if not request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-store"
    return response


class SlidingWindowLimiter:
    """At most ``limit`` hits per key in any ``window_s`` seconds.

    ``clock`` is monotonic seconds (for tests). Thread-safe. Keeps at most ``max_keys`` keys
    (the least recently hit are forgotten first), so a flood of made-up names cannot grow it
    without bound.
    """

    def __init__(self, limit: int, window_s: float, *,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000) -> None:
        self.limit = int(limit)
        self.window_s = float(window_s)
        self._clock = clock
        self._max_keys = max_keys
        self._hits: OrderedDict[Hashable, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def blocked(self, *keys: Hashable) -> bool:
        """Whether any of ``keys`` has used up its hits in the current window."""
        with self._lock:
            now = self._clock()
            return any(len(self._recent(key, now)) >= self.limit for key in keys)

    def hit(self, *keys: Hashable) -> None:
        with self._lock:
            self._hit(keys, self._clock())

    def acquire(self, *keys: Hashable) -> bool:
        """Count one hit on every key unless one of them has used up its window; return
        whether it was counted. The check and the count are one step under the lock, so of
        many parallel callers at most ``limit`` get True in a window."""
        with self._lock:
            now = self._clock()
            if any(len(self._recent(key, now)) >= self.limit for key in keys):
                return False
            self._hit(keys, now)
            return True

    def release(self, *keys: Hashable) -> None:
        """Take back the latest hit of each key (an :meth:`acquire` that did not count as a
        failure after all)."""
        with self._lock:
            for key in keys:
                hits = self._hits.get(key)
                if hits:
                    hits.pop()

    def forget(self, *keys: Hashable) -> None:
        with self._lock:
            for key in keys:
                self._hits.pop(key, None)

    def _hit(self, keys: tuple[Hashable, ...], now: float) -> None:
        for key in keys:
            self._recent(key, now).append(now)
            self._hits.move_to_end(key)
        while len(self._hits) > self._max_keys:
            self._hits.popitem(last=False)

    def _recent(self, key: Hashable, now: float) -> deque[float]:
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        return hits


def init_app(app: Flask) -> None:
    app.before_request(check_csrf)
    app.after_request(add_headers)
    app.jinja_env.globals["csrf_field"] = csrf_field
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.extensions["facegate.login_limiter"] = SlidingWindowLimiter(
        app.config["LOGIN_RATE_LIMIT"], app.config["LOGIN_RATE_WINDOW_SECONDS"])
