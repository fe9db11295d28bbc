"""``/api/tokens``: make, list and revoke API tokens (the tokens themselves are
:mod:`device.web.tokens`)."""

from __future__ import annotations

from typing import Any

from flask import g, jsonify
from flask.typing import ResponseReturnValue

from device.errors import FacegateError, RequestInvalid
from device.web.api._common import _error, admin_only, bp, json_body
from device.web.audit import audit
from device.web.db import database_path
from device.web.roles import current_user
from device.web.tokens import ApiToken, create_token, find_token, list_tokens, revoke_token
from device.web.users import list_users


@bp.post("/tokens")
@admin_only
def token_create() -> ResponseReturnValue:
    """A new token, shown once. Only from a signed-in session: a token cannot breed tokens."""
    if g.get("api_token_id"):
        return _error(403, "API tokens are made from a signed-in browser session, not with "
                           "another token")
    body = json_body({"name": (str,), "user": (str,)}, required=("name",))
    me = current_user()
    owner = next((user for user in list_users(database_path())
                  if user.name == body.get("user", me.name)), None)
    # Another admin's token would let this admin act in their name in the audit log.
    if owner is None or (owner.id != me.id and owner.is_admin):
        raise RequestInvalid("user", "user must be your own account or a viewer's")
    try:
        token = create_token(database_path(), owner.name, body["name"])
    except FacegateError as error:
        raise RequestInvalid("name", str(error)) from None
    made = find_token(database_path(), token)
    audit("token_create", {"token_id": made.id, "name": made.name, "for": made.user_name})
    return jsonify(token=token, **_token_json(made)), 201


@bp.get("/tokens")
@admin_only
def token_list() -> ResponseReturnValue:
    return jsonify(tokens=[_token_json(token) for token in list_tokens(database_path())])


@bp.delete("/tokens/<token_id>")
@admin_only
def token_revoke(token_id: str) -> ResponseReturnValue:
    json_body({})
    token = revoke_token(database_path(), token_id)
    audit("token_revoke", {"token_id": token.id, "name": token.name, "for": token.user_name})
    return jsonify(_token_json(token))


def _token_json(token: ApiToken) -> dict[str, Any]:
    return {"id": token.id, "name": token.name, "user": token.user_name,
            "created_at": token.created_at, "last_used_at": token.last_used_at,
            "revoked_at": token.revoked_at, "active": token.is_active}
