"""Who is signed in, for how long, and what their role lets them see.

Every request first loads the account of its session (:func:`load_user`): a session idle for
longer than ``SESSION_IDLE_MINUTES``, one the door no longer records as open (signed out, a new
password, the account disabled or removed: :mod:`device.web.sessions`), or one whose account
has changed since (a new role), is signed out. Then the gate: nothing but the public
endpoints answers without an account, whether or not a view remembers its decorator.
Requests to the JSON API's blueprint pass the gate: its own ``before_request`` authenticates
each one (a bearer token, else this session) and sets ``g.user``.

Roles: ``admin`` (everything) and ``viewer`` (the dashboard and the access log only).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from flask import abort, current_app, flash, g, jsonify, redirect, request, session, url_for

from device.gallery.engines import DATABASE_ERRORS
from device.web.sessions import end_session, session_owner, start_session
from device.web.users import User, get_user

# Blueprints whose own before_request authenticates each request: the JSON API (an API token
# or this session) and, at a site server, the doors' sync API (a door's credential).
SELF_AUTHENTICATING = frozenset({"api", "sync"})
PUBLIC_ENDPOINTS = frozenset({"auth.login", "auth.setup", "dashboard.health", "static"})
# Requests a page makes by itself (the live view, the dashboard's state poll) are not activity: a
# dashboard left open must still time out.
PASSIVE_ENDPOINTS = frozenset({"dashboard.live_jpeg", "dashboard.state"})

View = TypeVar("View", bound=Callable[..., Any])


def current_user() -> User | None:
    """The signed-in account of this request, or None."""
    return g.get("user")


def sign_in(user: User) -> None:
    """Start a fresh session for ``user`` (a new CSRF token, nothing kept from before), and
    record it on the door."""
    session.clear()
    session.permanent = True
    session["sid"] = start_session(current_app.config["DATABASE"], user.id, _idle())
    session["user_id"] = user.id
    session["user_version"] = user.version
    session["seen"] = time.time()
    g.user = user


def sign_out() -> None:
    """End this request's session, on the door as well as in this browser: a copy of the
    cookie is refused from now on (unless the database cannot be written: then only this
    browser is signed out, and the session ends on the door when it has been idle)."""
    try:
        end_session(current_app.config["DATABASE"], session.get("sid"))
    except DATABASE_ERRORS as error:  # a full disk: signing out must still work here
        current_app.logger.error("session not revoked on the door: %s", error)
    session.clear()
    g.user = None


def load_user() -> Any:
    """``before_request``: load the session's account, apply the idle time-out and the gate."""
    g.user = None
    idle = False
    user_id = session.get("user_id")
    if user_id:
        if time.time() - float(session.get("seen", 0)) > _idle().total_seconds():
            sign_out()
            idle = True
        else:
            user = _session_account(user_id)
            if user is None or user.version != session.get("user_version"):
                session.clear()
            else:
                g.user = user
                if request.endpoint not in PASSIVE_ENDPOINTS:
                    session["seen"] = time.time()
    if g.user is not None or request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if request.blueprint in SELF_AUTHENTICATING:
        return None  # these authenticate every request themselves (a bearer token)
    if request.path.startswith("/api/"):
        return jsonify(error="sign in or send an API token"), 401
    if idle:
        minutes = current_app.config["SESSION_IDLE_MINUTES"]
        flash(f"You were signed out after {minutes} minutes without activity.", "info")
    if request.endpoint in PASSIVE_ENDPOINTS or request.method != "GET":
        return redirect(url_for("auth.login"))
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def _session_account(user_id: str) -> User | None:
    database = current_app.config["DATABASE"]
    active = request.endpoint not in PASSIVE_ENDPOINTS
    if session_owner(database, session.get("sid"), _idle(), active=active) != user_id:
        return None
    user = get_user(database, user_id)
    return None if user is None or user.is_disabled else user  # disabling revoked it too


def _idle() -> timedelta:
    return timedelta(minutes=current_app.config["SESSION_IDLE_MINUTES"])


def login_required(view: View) -> View:
    """Only for a signed-in account (any role)."""
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if current_user() is None:
            return redirect(url_for("auth.login"))
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def admin_required(view: View) -> View:
    """Only for an admin; a viewer gets 403."""
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        user = current_user()
        if user is None:
            return redirect(url_for("auth.login"))
        if not user.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def init_app(app: Any) -> None:
    app.before_request(load_user)
