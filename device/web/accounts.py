"""The account pages: ``/account`` (anyone signed in: their own password) and ``/accounts``
(admins: add, disable and enable, reset a password, change a role, remove).

A thin front over :mod:`device.web.users`, where every rule about accounts lives (the
password rules, the last active admin, nobody disabling themselves); the page only reads the
forms, turns a refusal into one sentence beside the form, and writes the audit row. Every
form is a POST with its CSRF token (``device.web.security``).

Changing one's own password signs every session of the account out, this one included, and
then signs this browser in afresh: a copy of this browser's cookie dies with the old
session. A wrong current password counts as a failed sign-in (the same limiter, per address
and per name), so a session left open on a shared computer cannot be used to guess it.
"""

from __future__ import annotations

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.wrappers import Response

from device.errors import FacegateError, WrongPassword
from device.web.audit import audit
from device.web.error_pages import sentence
from device.web.roles import admin_required, current_user, login_required, sign_in
from device.web.security import SlidingWindowLimiter
from device.web.users import (
    ROLES,
    User,
    add_user,
    change_own_password,
    disable_user,
    enable_user,
    get_user,
    list_users,
    remove_user,
    set_password,
    set_role,
)

bp = Blueprint("accounts", __name__)

DIFFER = "The two new passwords differ."
THROTTLED = "Too many wrong passwords; wait a minute and try again."


def _database() -> str:
    return current_app.config["DATABASE"]


def _limiter() -> SlidingWindowLimiter:
    return current_app.extensions["facegate.login_limiter"]


# --- Your own account -----------------------------------------------------------------------


@bp.get("/account")
@login_required
def account() -> str:
    return render_template("account.html")


@bp.post("/account/password")
@login_required
def change_password() -> str | Response | tuple[str, int]:
    me = current_user()
    current = request.form.get("current_password", "")
    new = request.form.get("new_password", "")
    if new != request.form.get("new_password2", ""):
        return _account_refused(DIFFER, 400)
    keys = (("address", request.remote_addr), ("user", me.name.casefold()))
    if not _limiter().acquire(*keys):
        audit("password_change_throttled")
        return _account_refused(THROTTLED, 429)
    try:
        user = change_own_password(_database(), me.id, current, new)
    except WrongPassword as error:
        audit("password_change_refused", {"reason": str(error)})
        return _account_refused(sentence(str(error)), 400)
    except FacegateError as error:  # the current password was right: not a guess
        _limiter().release(keys[0])
        _limiter().release(keys[1])
        return _account_refused(sentence(str(error)), 400)
    _limiter().release(keys[0])
    _limiter().forget(keys[1])
    sign_in(user)  # a fresh session: the old one, and any copy of its cookie, is revoked
    audit("password_change")
    flash("Your password is changed. Every other browser signed in as you is signed out.",
          "info")
    return redirect(url_for("accounts.account"))


def _account_refused(message: str, status: int) -> tuple[str, int]:
    return render_template("account.html", error=message), status


# --- Everyone's accounts (admins) -----------------------------------------------------------


@bp.get("/accounts")
@admin_required
def index() -> str:
    return _list_page()


@bp.post("/accounts/new")
@admin_required
def add() -> Response | tuple[str, int]:
    form = {"name": request.form.get("username", ""), "role": request.form.get("role", "")}
    password = request.form.get("password", "")
    if password != request.form.get("password2", ""):
        return _list_page(form=form, error="The two passwords differ."), 400
    try:
        user = add_user(_database(), form["name"], password, role=form["role"])
    except FacegateError as error:
        return _list_page(form=form, error=sentence(str(error))), 400
    audit("user_add", {"name": user.name, "role": user.role, "via": "page"})
    flash(f"Added {user.name} ({user.role}). Tell them their password in person; they can "
          "change it under Account.", "info")
    return redirect(url_for("accounts.index"))


@bp.get("/accounts/<user_id>")
@admin_required
def show(user_id: str) -> str:
    return _edit_page(_account(user_id))


@bp.post("/accounts/<user_id>/password")
@admin_required
def reset_password(user_id: str) -> Response | tuple[str, int]:
    user = _account(user_id)
    password = request.form.get("password", "")
    if password != request.form.get("password2", ""):
        return _edit_page(user, error="The two passwords differ."), 400
    if user.id == current_user().id:  # one's own needs the current password
        return redirect(url_for("accounts.account"))
    try:
        user = set_password(_database(), user.name, password)
    except FacegateError as error:
        return _edit_page(user, error=sentence(str(error))), 400
    audit("user_password", {"name": user.name, "via": "page"})
    flash(f"{user.name} has a new password and is signed out everywhere.", "info")
    return redirect(url_for("accounts.show", user_id=user.id))


@bp.post("/accounts/<user_id>/role")
@admin_required
def change_role(user_id: str) -> Response | tuple[str, int]:
    user = _account(user_id)
    try:
        changed = set_role(_database(), user.name, request.form.get("role", ""))
    except FacegateError as error:
        return _edit_page(user, error=sentence(str(error))), 400
    if changed.role != user.role:
        audit("user_role", {"name": changed.name, "role": changed.role})
        flash(f"{changed.name} is now {'an admin' if changed.is_admin else 'a viewer'} and "
              "signs in again.", "info")
    if changed.id == current_user().id:  # signed out by the change
        return redirect(url_for("auth.login"))
    return redirect(url_for("accounts.show", user_id=user.id))


@bp.post("/accounts/<user_id>/disable")
@admin_required
def disable(user_id: str) -> Response | tuple[str, int]:
    user = _account(user_id)
    try:
        changed = disable_user(_database(), user.name, acting=current_user())
    except FacegateError as error:
        return _edit_page(user, error=sentence(str(error))), 400
    if not user.is_disabled:
        audit("user_disable", {"name": changed.name})
        flash(f"{changed.name} is disabled: signed out everywhere, and can no longer sign in "
              "or use an API token.", "info")
    return redirect(url_for("accounts.show", user_id=user.id))


@bp.post("/accounts/<user_id>/enable")
@admin_required
def enable(user_id: str) -> Response:
    user = _account(user_id)
    changed = enable_user(_database(), user.name)
    if user.is_disabled:
        audit("user_enable", {"name": changed.name})
        flash(f"{changed.name} may sign in again, with the same password.", "info")
    return redirect(url_for("accounts.show", user_id=user.id))


@bp.post("/accounts/<user_id>/remove")
@admin_required
def remove(user_id: str) -> Response | tuple[str, int]:
    user = _account(user_id)
    if request.form.get("confirm") != "yes":
        return _edit_page(user, error=f"Tick the box to confirm removing {user.name}."), 400
    try:
        remove_user(_database(), user.name, acting=current_user())
    except FacegateError as error:
        return _edit_page(user, error=sentence(str(error))), 400
    audit("user_remove", {"name": user.name, "via": "page"})
    flash(f"Removed {user.name} and their API tokens.", "info")
    return redirect(url_for("accounts.index"))


def _account(user_id: str) -> User:
    user = get_user(_database(), user_id)
    if user is None:
        abort(404, description="There is no such account (it may have been removed).")
    return user


def _list_page(form: dict[str, str] | None = None, error: str | None = None) -> str:
    return render_template("accounts.html", users=list_users(_database()), roles=ROLES,
                           form=form or {"name": "", "role": "viewer"}, error=error)


def _edit_page(user: User, error: str | None = None) -> str:
    # Read again: a refusal shows the account as it is now.
    user = get_user(_database(), user.id) or user
    return render_template("account_edit.html", account=user, roles=ROLES, error=error,
                           me=user.id == current_user().id)
