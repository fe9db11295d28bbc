"""Signing in and out, and the one-time set-up link that creates the first admin.

The account store and password hashing are in :mod:`device.web.users`, the session and role
checks in :mod:`device.web.roles`; both are re-exported here, so that ``device.web.auth`` is
the one place the CLI, the daemon and the API import them from.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.wrappers import Response

from device.errors import AccountDisabled, FacegateError
from device.gallery.engines import DATABASE_ERRORS
from device.web.audit import audit, audit_after
from device.web.error_pages import sentence
from device.web.roles import admin_required, current_user, login_required, sign_in, sign_out
from device.web.security import SlidingWindowLimiter
from device.web.users import (
    ROLES,
    User,
    add_user,
    admin_exists,
    change_own_password,
    check_sign_in,
    create_setup_token,
    disable_user,
    enable_user,
    get_user,
    hash_password,
    list_users,
    password_matches,
    remove_user,
    set_password,
    set_role,
    setup_token_valid,
    use_setup_token,
    verify_password,
)

__all__ = [
    "ROLES",
    "User",
    "add_user",
    "admin_exists",
    "admin_required",
    "bp",
    "change_own_password",
    "check_sign_in",
    "create_setup_token",
    "current_user",
    "disable_user",
    "enable_user",
    "get_user",
    "hash_password",
    "list_users",
    "login_required",
    "password_matches",
    "remove_user",
    "same_site_path",
    "set_password",
    "set_role",
    "setup_token_valid",
    "use_setup_token",
    "verify_password",
]

bp = Blueprint("auth", __name__)

WRONG = "Wrong name or password."
THROTTLED = "Too many failed sign-ins; wait a minute and try again."
UNWRITABLE = ("The door cannot write to its database now (is its disk full?), so you cannot "
              "be signed in; free some space and try again.")


def _limiter() -> SlidingWindowLimiter:
    return current_app.extensions["facegate.login_limiter"]


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | Response | tuple[str, int]:
    if request.method == "GET":
        if current_user() is not None:
            return redirect(url_for("dashboard.index"))
        return render_template("login.html", next=same_site_path(request.args.get("next")))
    name = " ".join(request.form.get("username", "").split())[:100]
    password = request.form.get("password", "")
    target = same_site_path(request.form.get("next"))
    keys = (("address", request.remote_addr), ("user", name.casefold()))
    # Counted as a failure before the password is checked (and given back if it was right),
    # so that guesses sent in parallel are counted while they are still being hashed.
    if not _limiter().acquire(*keys):
        audit_after("sign_in_throttled", {"name": name}, user=name or None)
        flash(THROTTLED, "error")
        return render_template("login.html", next=target, name=name), 429
    try:
        user = check_sign_in(current_app.config["DATABASE"], name, password) if name else None
    except AccountDisabled as error:  # the right password: saying so tells a guesser nothing
        audit_after("sign_in_failed", {"name": name, "reason": "disabled"}, user=name)
        flash(sentence(str(error)), "error")
        return render_template("login.html", next=target, name=name), 403
    if user is None:
        audit_after("sign_in_failed", {"name": name}, user=name or None)
        flash(WRONG, "error")
        return render_template("login.html", next=target, name=name), 401
    _limiter().release(keys[0])
    _limiter().forget(keys[1])
    try:
        sign_in(user)
    except (*DATABASE_ERRORS, OSError) as error:  # a full disk: refused clearly, never a 500
        current_app.logger.error("sign-in of %s failed: %s", user.name, error)
        session.clear()
        flash(UNWRITABLE, "error")
        return render_template("login.html", next=target, name=name), 503
    audit_after("sign_in", {"role": user.role})
    return redirect(target or url_for("dashboard.index"))


@bp.route("/logout", methods=["POST"])
def logout() -> Response:
    if current_user() is not None:
        audit("sign_out")
    sign_out()
    flash("Signed out.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/setup/<token>", methods=["GET", "POST"])
def setup(token: str) -> str | Response | tuple[str, int]:
    database = current_app.config["DATABASE"]
    if not setup_token_valid(database, token):
        abort(404, description="This set-up link has been used or has expired. Ask whoever "
                               "runs the door for a new one, or sign in.")
    if request.method == "GET":
        return render_template("setup.html", token=token)
    name = request.form.get("username", "")
    password = request.form.get("password", "")
    if password != request.form.get("password2", ""):
        flash("The two passwords differ.", "error")
        return render_template("setup.html", token=token, name=name), 400
    try:
        user = use_setup_token(database, token, name, password)
    except FacegateError as error:
        flash(sentence(str(error)), "error")
        return render_template("setup.html", token=token, name=name), 400
    sign_in(user)
    audit("first_admin", {"name": user.name})
    flash(f"Welcome, {user.name}: you are the first admin of this door.", "info")
    return redirect(url_for("dashboard.index"))


def same_site_path(target: str | None) -> str | None:
    """``target`` as a path on this site, or None for anything a browser could take off it.

    Read the way a browser reads a ``Location`` (the WHATWG URL standard): leading and
    trailing spaces and control characters dropped, tabs and newlines anywhere removed, a
    backslash taken for a slash. So ``/%09/evil.example`` (a tab) and ``/\\evil.example``
    both mean ``//evil.example``, another site. What is left must start with one ``/``, have
    no scheme and no network location, and hold no other control character; it is returned
    in that normalised form, so the redirect says exactly what was checked.
    """
    if not isinstance(target, str):
        return None
    path = _BROWSER_IGNORES.sub("", target.strip(_C0_AND_SPACE)).replace("\\", "/")
    if not path.startswith("/") or path.startswith("//") or _CONTROL.search(path):
        return None
    parts = urlsplit(path)
    if parts.scheme or parts.netloc:
        return None
    return path


_C0_AND_SPACE = "".join(map(chr, range(0x21)))
_BROWSER_IGNORES = re.compile(r"[\t\n\r]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
