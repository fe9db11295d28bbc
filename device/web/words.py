"""How the page puts numbers and stored values into words (Jinja filters).

``3 | plural("template")`` is "3 templates", ``1 | plural("person", "people")`` is "1 person";
an audit row's detail value reads as text, never as a Python literal: a list is joined
("no face found; too dark"), a dict reads "key: value".
"""

from __future__ import annotations

from typing import Any

from flask import Flask


def plural(count: int, word: str, many: str | None = None) -> str:
    """``count`` and ``word``, in the plural unless ``count`` is 1 (``many``: an irregular
    plural; default ``word + "s"``)."""
    return f"{count} {word if count == 1 else (many or word + 's')}"


def in_words(value: Any) -> str:
    """A stored value as a person reads it: lists joined with "; ", dicts as
    "key: value, ...", booleans as yes/no, None as nothing."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return "; ".join(in_words(item) for item in value)
    if isinstance(value, dict):
        return ", ".join(f"{key}: {in_words(item)}" for key, item in value.items())
    return str(value)


def init_app(app: Flask) -> None:
    app.jinja_env.filters["plural"] = plural
    app.jinja_env.filters["in_words"] = in_words
