"""Errors at the web edge, each turned into one clear sentence: a page for the browser, a JSON
``{"error": ...}`` under ``/api/``."""

from __future__ import annotations

import logging

from flask import Flask, current_app, jsonify, render_template, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, InternalServerError, RequestEntityTooLarge

from device.errors import FacegateError

log = logging.getLogger(__name__)

TITLES = {
    400: "Request refused",
    401: "Sign-in needed",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    413: "Upload too large",
    429: "Too many attempts",
    500: "Something went wrong",
}
MESSAGES = {
    403: "Your account may not do this; ask an admin.",
    404: "There is nothing here (it may have been deleted).",
    405: "This address does not take that kind of request.",
    500: "The page failed; the details are in the door's log.",
}


def sentence(message: str) -> str:
    """A message as a sentence: capital first (unless it starts with a key such as
    ``door.unlock_seconds``), full stop last."""
    first = message.split(" ", 1)[0]
    if first.isalpha():
        message = message[:1].upper() + message[1:]
    return message if message.endswith((".", "?", "!")) else message + "."


def show(status: int, message: str) -> ResponseReturnValue:
    if request.path.startswith("/api/"):
        return jsonify(error=message), status
    title = TITLES.get(status, "Request refused")
    return render_template("message.html", title=title, message=message), status


def _http_error(error: HTTPException) -> ResponseReturnValue:
    status = error.code or 500
    message = MESSAGES.get(status) if _generic(error) else error.description
    return show(status, message or error.description or TITLES.get(status, "Error"))


def _generic(error: HTTPException) -> bool:
    """Whether the description is werkzeug's stock text (not one written for this case)."""
    return error.description == type(error).description


def _too_large(error: RequestEntityTooLarge) -> ResponseReturnValue:
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    size = f"{limit / 2**20:.0f} MB" if limit >= 2**20 else f"{limit / 1024:.0f} KB"
    return show(413, f"The upload is too large (the limit is {size} in one go); send fewer "
                     "or smaller photos.")


def _facegate_error(error: FacegateError) -> ResponseReturnValue:
    return show(400, str(error))


def _unexpected(error: InternalServerError) -> ResponseReturnValue:
    log.error("web request %s %s failed", request.method, request.path,
              exc_info=error.original_exception)
    return show(500, MESSAGES[500])


def init_app(app: Flask) -> None:
    app.register_error_handler(RequestEntityTooLarge, _too_large)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(FacegateError, _facegate_error)
    app.register_error_handler(InternalServerError, _unexpected)
