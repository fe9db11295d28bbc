"""The one rule for typed names (people, external ids, accounts, API tokens): what it
accepts, what it refuses, and that the store and the accounts both apply it."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.errors import FacegateError, NameInvalid
from device.gallery import Gallery
from device.gallery.names import MAX_NAME_LENGTH, clean_name, clean_optional_name
from device.web.tokens import create_token
from device.web.users import add_user

REFUSED = {"Cc", "Cf", "Zl", "Zp"}
BAD = ["   ", "\t\n", "", "Ada\x1b[2J", "Ada\x1b]0;owned\x07", "\u202eadA", "Ad\u200da",
       "A\u2028da", "x" * 5000, "x" * (MAX_NAME_LENGTH + 1)]


@pytest.mark.parametrize("name", BAD)
def test_a_bad_name_is_refused_in_one_sentence(name):
    with pytest.raises(NameInvalid) as refused:
        clean_name(name, what="a person's name")
    message = str(refused.value)
    assert message.startswith("a person's name") and "\n" not in message
    assert len(message) < 120 and not any(unicodedata.category(c) in REFUSED for c in message)


def test_spaces_are_tidied_and_other_scripts_kept():
    assert clean_name("  Zoë   Ng\n") == "Zoë Ng"
    assert clean_name("محمد علي") == "محمد علي"
    assert clean_name("x" * MAX_NAME_LENGTH) == "x" * MAX_NAME_LENGTH
    assert clean_optional_name("  ", what="an external id", field="external_id") is None


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_any_text_is_a_clean_name_or_name_invalid(text):
    try:
        name = clean_name(text)
    except NameInvalid as error:
        assert str(error) and error.field == "name"
        return
    assert name == name.strip() and "  " not in name and 1 <= len(name) <= MAX_NAME_LENGTH
    assert not any(unicodedata.category(char) in REFUSED for char in name)
    assert clean_name(name) == name  # stored names read back unchanged


@pytest.mark.parametrize("name", BAD)
def test_the_store_and_the_accounts_refuse_the_same_names(tmp_path, name):
    database = tmp_path / "facegate.db"
    with Gallery(database) as gallery:
        with pytest.raises(NameInvalid):
            gallery.add_person(name)
        if name.strip():  # a blank external id is simply none
            with pytest.raises(NameInvalid, match="external id"):
                gallery.add_person("Ada", external_id=name)
        ada = gallery.add_person("Ada")
        with pytest.raises(NameInvalid):
            gallery.update_person(ada.id, name=name)
    with pytest.raises(NameInvalid):
        add_user(database, name, "correct horse battery")
    add_user(database, "ada", "correct horse battery")
    with pytest.raises(NameInvalid):
        create_token(database, "ada", name)


def test_name_invalid_is_a_facegate_error_the_fronts_catch():
    assert issubclass(NameInvalid, FacegateError)
