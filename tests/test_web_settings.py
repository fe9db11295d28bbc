"""The settings page and device.site_settings: validated by the config's own rules, stored,
audited, and read back by the daemon."""

from __future__ import annotations

import io
import re

import pytest

from device.config import load_config
from device.errors import SettingInvalid
from device.identification import Decision
from device.site_settings import (
    SETTABLE,
    apply_site_settings,
    read_site_settings,
    site_settings_seq,
    write_site_settings,
)
from device.vision.liveness import LivenessModel
from device.vision.models import DEFAULT_EMBEDDER, load_card
from tests.conftest import hand_edit_settings
from tests.web_support import (
    audit_actions,
    csrf_from,
    post,
)


def save(client, **values: str):
    form = {key.replace("__", "."): value for key, value in values.items()}
    return post(client, "/settings", form, page="/settings")


def field_error(response, key: str) -> str | None:
    match = re.search(rf'id="error-{key.replace(".", "-")}">([^<]*)<',
                      response.get_data(as_text=True))
    return match[1] if match else None


def test_the_page_has_every_settable_key_and_explains_the_threshold(admin):
    page = admin.get("/settings").get_data(as_text=True)
    assert '<form id="settings"' in page
    for key in SETTABLE:
        assert f'name="{key}"' in page
    explained = re.search(r'id="threshold-explained">.*?</div>', page, re.S)[0]
    # The SFace card's figures: the threshold its curve gives with nobody enrolled yet, and
    # the expected false-accept rate it was set for.
    card = load_card(DEFAULT_EMBEDDER).threshold
    in_force = round(Decision.from_card(card).threshold_for(0), 3)
    assert f'<b id="threshold-in-force">{in_force}</b> for the 0 people' in explained
    assert f"<b>{card['fpir'] * 100:g}%</b>" in explained
    assert "lfw-a" in explained
    assert "Takes effect after a restart." in page


def test_the_help_speaks_of_the_door_and_keeps_the_numbers_behind_a_toggle(admin):
    page = admin.get("/settings").get_data(as_text=True)
    hints = " ".join(re.findall(r'<p class="hint">(.*?)</p>', page.split("<details")[0], re.S))
    threshold = re.search(r'id="setting-recognition-threshold">.*?</details>', page, re.S)[0]
    assert "fewer strangers let in, staff turned away more often in poor light" in threshold
    helps = re.findall(r'<div class="setting".*?<details', page, re.S)
    assert len(helps) == len(SETTABLE)
    for text in helps:
        assert "cosine" not in text and "open-set" not in text and "card" not in text
    assert page.count("<summary>How this was measured</summary>") == len(SETTABLE)
    assert 'id="threshold-explained"' in threshold.split("<details")[1]
    # A placeholder never looks like a value: it says "default", the value is text under it.
    assert set(re.findall(r'placeholder="([^"]*)"', page)) == {"default"}
    assert "Without a value here" not in page and hints


def test_a_good_value_is_saved_audited_and_read_back(app, admin):
    database = app.config["DATABASE"]
    before = site_settings_seq(database)
    response = save(admin, recognition__threshold="0.45", door__unlock_seconds="5")
    assert response.status_code == 302
    assert read_site_settings(database) == {"recognition.threshold": 0.45,
                                            "door.unlock_seconds": 5.0}
    assert site_settings_seq(database) != before
    assert audit_actions(database)[-1] == "settings_change"
    page = admin.get("/settings").get_data(as_text=True)
    assert 'name="recognition.threshold" value="0.45"' in page


@pytest.mark.parametrize(("key", "value", "message"), [
    ("recognition.threshold", "1.5", "must be from -1 to 1"),
    ("door.unlock_seconds", "lots", "must be a number"),
    ("events.max_age_days", "2.5", "must be a whole number"),
    ("recognition.votes_needed", "7", "cannot be more than recognition.votes_window"),
])
def test_a_bad_value_is_shown_beside_its_field_and_nothing_is_saved(app, admin, key, value,
                                                                     message):
    database = app.config["DATABASE"]
    response = post(admin, "/settings", {"door.held_open_seconds": "40", key: value},
                    page="/settings")
    assert response.status_code == 400
    assert message in field_error(response, key)
    assert read_site_settings(database) == {}
    assert "settings_change" not in audit_actions(database)


def test_a_camera_change_is_stored_with_a_restart_note(app, admin):
    response = save(admin, camera__source="0")
    page = admin.get(response.location).get_data(as_text=True)
    assert "takes effect after a restart" in page
    assert read_site_settings(app.config["DATABASE"]) == {"camera.source": "0"}


def test_clearing_a_field_gives_the_value_back_to_the_file(app, admin):
    database = app.config["DATABASE"]
    save(admin, recognition__threshold="0.45")
    seq = site_settings_seq(database)
    save(admin, recognition__threshold="")
    assert read_site_settings(database) == {}
    assert site_settings_seq(database) != seq


def test_a_viewer_may_not_change_settings(app, viewer):
    response = post(viewer, "/settings", {"door.unlock_seconds": "9"})
    assert response.status_code == 403
    assert read_site_settings(app.config["DATABASE"]) == {}


def test_a_hand_edited_settings_row_gives_the_page_not_a_500(app, admin):

    database = app.config["DATABASE"]
    hand_edit_settings(database)

    page = admin.get("/settings")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert '<form id="settings"' in text
    assert "not json" not in text  # unreadable: the file's value is in force, shown blank
    assert read_site_settings(database) == {"recognition.threshold": "high"}
    # The readable but wrong value is named beside its field when the admin saves...
    refused = save(admin, door__unlock_seconds="5")
    assert refused.status_code == 400
    assert "recognition.threshold" in field_error(refused, "recognition.threshold")
    # ...and saving over the damaged rows mends them.
    saved = save(admin, door__unlock_seconds="5", recognition__threshold="",
                 door__held_open_seconds="60")
    assert saved.status_code == 302
    assert read_site_settings(database) == {"door.unlock_seconds": 5.0,
                                            "door.held_open_seconds": 60.0}


# --- device.site_settings ------------------------------------------------------------------------


def test_only_settable_keys_may_be_written(db_path):
    with pytest.raises(SettingInvalid, match="cannot be changed") as refused:
        write_site_settings(db_path, {"paths.data_dir": "/tmp"}, "ann")
    assert refused.value.key == "paths.data_dir"


def test_a_change_is_checked_against_the_files_values(db_path):
    base = {"recognition.votes_window": 5}
    write_site_settings(db_path, {"recognition.votes_needed": "4"}, "ann", base=base)
    with pytest.raises(SettingInvalid):
        write_site_settings(db_path, {"recognition.votes_needed": "6"}, "ann", base=base)
    assert read_site_settings(db_path) == {"recognition.votes_needed": 4}


def test_the_daemon_applies_site_settings_over_its_config(db_path):
    write_site_settings(db_path, {"recognition.threshold": 0.42, "events.max_events": "500"},
                        "ann")
    config = load_config(None, {}, environ={})
    applied = apply_site_settings(config, read_site_settings(db_path))
    assert applied.recognition.threshold == 0.42
    assert applied.events.max_events == 500
    assert applied.door == config.door


def test_writing_the_same_value_again_changes_nothing(db_path):
    write_site_settings(db_path, {"door.unlock_seconds": "4"}, "ann")
    seq = site_settings_seq(db_path)
    assert write_site_settings(db_path, {"door.unlock_seconds": 4}, "ann") == {}
    assert site_settings_seq(db_path) == seq


def test_an_admin_downloads_a_backup_and_restores_it_from_the_settings_page(admin, db_path,
                                                                             tmp_path):
    from device.gallery.store import Gallery

    page = admin.get("/settings")
    assert b'id="download-backup"' in page.data and b'id="restore"' in page.data
    with Gallery(db_path) as gallery:
        gallery.add_person("Kept In Backup")
    with admin.get("/api/backup") as download:
        assert download.status_code == 200
        backup = download.data
    assert backup.startswith(b"SQLite format 3\x00")
    with Gallery(db_path) as gallery:
        gallery.remove_person("Kept In Backup")
    token = csrf_from(admin, "/settings")
    refused = admin.post("/restore", data={"csrf_token": token, "database": (
        io.BytesIO(b"not a database"), "x.db")}, content_type="multipart/form-data",
        follow_redirects=True)
    assert b"Not restored" in refused.data
    restored = admin.post("/restore", data={"csrf_token": token, "database": (
        io.BytesIO(backup), "../../etc/passwd")}, content_type="multipart/form-data",
        follow_redirects=True)
    assert b"Restored" in restored.data
    with Gallery(db_path) as gallery:
        assert gallery.find_person("Kept In Backup") is not None
    assert "restore" in audit_actions(db_path)


# --- Liveness ------------------------------------------------------------------------------------


def test_the_page_offers_the_liveness_settings_with_the_cards_values(admin, services):
    model = LivenessModel.by_name("")
    page = admin.get("/settings").get_data(as_text=True)
    enabled = re.search(r'<select id="liveness.enabled" name="liveness.enabled">(.*?)</select>',
                        page, re.S)[1]
    assert re.findall(r'<option value="(\w*)"', enabled) == ["", "true", "false"]
    assert '<option value="" selected>' in enabled  # not set here: the file's value applies
    # Without a value here, the daemon's configuration decides (the page's tests run it off).
    daemon = "on" if services.config.liveness.enabled else "off"
    assert f'<b id="default-liveness-enabled">{daemon}</b>' in page
    assert (f'<b id="default-liveness-threshold">the model\'s own value ({model.threshold:g})</b>'
            in page.replace("&#39;", "'"))
    assert (f'<b id="default-liveness-votes_needed">the model\'s own value '
            f'({model.votes_needed:g})</b>' in page.replace("&#39;", "'"))
    assert re.search(r'name="liveness.threshold" value=""\s+type="number" step="0.01"', page)
    assert f"<code>{model.name}</code>" in re.search(r'id="liveness-explained">.*?</p>', page,
                                                     re.S)[0]


def test_liveness_can_be_turned_off_and_back_to_the_files_value(app, admin):
    database = app.config["DATABASE"]
    assert save(admin, liveness__enabled="false").status_code == 302
    assert read_site_settings(database) == {"liveness.enabled": False}
    assert audit_actions(database)[-1] == "settings_change"
    page = admin.get("/settings").get_data(as_text=True)
    assert '<option value="false" selected>off</option>' in page
    applied = apply_site_settings(load_config(None, {}, environ={}),
                                  read_site_settings(database))
    assert applied.liveness.enabled is False
    assert save(admin, liveness__enabled="").status_code == 302
    assert read_site_settings(database) == {}


def test_the_liveness_threshold_and_votes_are_saved_and_applied(app, admin):
    database = app.config["DATABASE"]
    response = save(admin, liveness__threshold="0.8", liveness__votes_needed="3",
                    liveness__enabled="true")
    assert response.status_code == 302
    assert read_site_settings(database) == {"liveness.enabled": True,
                                            "liveness.threshold": 0.8,
                                            "liveness.votes_needed": 3}
    applied = apply_site_settings(load_config(None, {}, environ={}),
                                  read_site_settings(database)).liveness
    assert (applied.enabled, applied.threshold, applied.votes_needed) == (True, 0.8, 3)
    page = admin.get("/settings").get_data(as_text=True)
    assert 'name="liveness.threshold" value="0.8"' in page
    assert '<option value="true" selected>on</option>' in page


@pytest.mark.parametrize(("key", "value", "message"), [
    ("liveness.enabled", "maybe", "must be true or false"),
    ("liveness.enabled", "1", "must be true or false"),
    ("liveness.threshold", "1.5", "must be from 0 to 1"),
    ("liveness.threshold", "-0.1", "must be from 0 to 1"),
    ("liveness.threshold", "high", "must be a number"),
    ("liveness.votes_needed", "0", "must be from 1 to 10"),
    ("liveness.votes_needed", "1.5", "must be a whole number"),
    ("liveness.votes_needed", "4", "cannot be more than recognition.votes_window"),
])
def test_a_bad_liveness_value_is_refused_beside_its_field(app, admin, key, value, message):
    database = app.config["DATABASE"]
    response = post(admin, "/settings", {"door.held_open_seconds": "40", key: value},
                    page="/settings")
    assert response.status_code == 400
    assert message in field_error(response, key)
    assert read_site_settings(database) == {}
    assert "settings_change" not in audit_actions(database)


def test_a_liveness_change_without_the_forms_token_is_refused(app, admin):
    response = admin.post("/settings", data={"liveness.enabled": "false"})
    assert response.status_code in (400, 403)
    assert read_site_settings(app.config["DATABASE"]) == {}
    forged = admin.post("/settings", data={"liveness.enabled": "false",
                                           "csrf_token": "not-the-token"})
    assert forged.status_code in (400, 403)
    assert read_site_settings(app.config["DATABASE"]) == {}


def test_the_api_sets_liveness_with_json_booleans(app, admin):
    token = csrf_from(admin, "/settings")
    changed = admin.patch("/api/settings", json={"liveness.enabled": False,
                                                 "liveness.threshold": 0.7},
                          headers={"X-CSRF-Token": token})
    assert changed.status_code == 200, changed.get_json()
    assert changed.get_json()["settings"] == {"liveness.enabled": False,
                                              "liveness.threshold": 0.7}
    refused = admin.patch("/api/settings", json={"liveness.enabled": "sometimes"},
                          headers={"X-CSRF-Token": token})
    assert refused.status_code == 400
    assert refused.get_json()["field"] == "liveness.enabled"


def test_a_motion_cue_is_chosen_from_a_list_saved_and_applied(app, admin):
    database = app.config["DATABASE"]
    page = admin.get("/settings").get_data(as_text=True)
    cue = re.search(r'<select id="liveness.motion_cue" name="liveness.motion_cue">(.*?)</select>',
                    page, re.S)[1]
    assert re.findall(r'<option value="([^"]*)"', cue) == ["", "off", "blink", "head_turn",
                                                            "either"]
    assert '<b id="default-liveness-motion_cue">off</b>' in page  # the default: texture alone
    assert save(admin, liveness__motion_cue="head_turn").status_code == 302
    assert read_site_settings(database) == {"liveness.motion_cue": "head_turn"}
    applied = apply_site_settings(load_config(None, {}, environ={}),
                                  read_site_settings(database)).liveness
    assert applied.motion_cue == "head_turn"
    page = admin.get("/settings").get_data(as_text=True)
    assert '<option value="head_turn" selected>a head turn</option>' in page
    response = post(admin, "/settings", {"liveness.motion_cue": "nod"}, page="/settings")
    assert response.status_code == 400
    assert 'must be "off", "blink", "head_turn" or "either"' in \
        field_error(response, "liveness.motion_cue").replace("&#34;", '"')
    assert read_site_settings(database) == {"liveness.motion_cue": "head_turn"}
