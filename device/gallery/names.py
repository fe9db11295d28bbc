"""The one rule for names that people type: a person's name and external id, an admin page
account's name, an API token's name. The store and the accounts apply it, so the CLI, the
page and the API accept exactly the same names.

Leading and trailing whitespace is dropped and runs of spaces become one. Refused: an empty
name, one longer than :data:`MAX_NAME_LENGTH`, and any character of the Unicode categories Cc
(control: terminal escape codes, tabs), Cf (format: bidi overrides such as U+202E, which make
a terminal or a page show text reversed, and invisible joiners), Zl and Zp (line and paragraph
separators): a name is printed raw by ``facegate people list`` and must not be able to
rewrite the screen. Also refused: Cs, a lone surrogate (JSON may escape one, ``"\\ud800"``),
which is no character and cannot be stored as UTF-8.
"""

from __future__ import annotations

import unicodedata

from device.errors import NameInvalid

MAX_NAME_LENGTH = 100
_REFUSED = {"Cc", "Cf", "Zl", "Zp", "Cs"}


def clean_name(value: object, *, what: str = "a name", field: str = "name",
               max_length: int = MAX_NAME_LENGTH) -> str:
    """``value`` as it is stored, or :class:`NameInvalid` in one sentence saying why
    (``what`` names the thing in it, e.g. "a person's name")."""
    if not isinstance(value, str):
        raise NameInvalid(field, f"{what} must be text")
    for char in value.strip():  # a trailing newline (a pasted line) is harmless: dropped
        if unicodedata.category(char) in _REFUSED:
            raise NameInvalid(field, f"{what} cannot hold the control or formatting character "
                                     f"U+{ord(char):04X}")
    cleaned = " ".join(value.split())
    if not cleaned:
        raise NameInvalid(field, f"{what} cannot be empty")
    if len(cleaned) > max_length:
        raise NameInvalid(field, f"{what} is at most {max_length} characters")
    return cleaned


def clean_optional_name(value: object, *, what: str, field: str,
                        max_length: int = MAX_NAME_LENGTH) -> str | None:
    """As :func:`clean_name`, but None or blank text is None (the field left empty)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return clean_name(value, what=what, field=field, max_length=max_length)
