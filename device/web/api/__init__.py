"""The JSON API under ``/api/``: the page's operations for scripts and other systems.

JSON in and out; every refusal is a 4xx with ``{"error": "one sentence"}`` (and ``"field"``
when one field of the request is to blame), and leaves the database as it was. docs/api.md
shows each call with curl; docs/openapi.yaml describes them all (a test keeps the two and
this package in step).

Who may call: a script sends ``Authorization: Bearer fg_...`` with an API token of an
account (:mod:`device.web.tokens`); a signed-in browser may call too, with its session
cookie, and then sends its CSRF token in the ``X-CSRF-Token`` header on every POST, PATCH
and DELETE (:mod:`device.web.security`). A request that carries a bearer token is judged by
that token alone, never by a cookie sent with it. Roles as on the pages: a viewer reads the
door's state and the access log, an admin does everything. Only ``GET /api/health`` is
public.
"""

from __future__ import annotations

from flask import Flask

# Importing the route modules registers their endpoints on the one blueprint, each named
# ``api.<function name>``.
from device.web.api import (  # noqa: F401
    backup_routes,
    door,
    events,
    people,
    photos,
    settings,
    templates,
    token_routes,
)
from device.web.api._common import bp

__all__ = ["bp", "init_app"]


def init_app(app: Flask) -> None:
    """Register the API (``create_app`` calls this)."""
    app.register_blueprint(bp)
