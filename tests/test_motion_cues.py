"""The optional motion cues (``liveness.motion_cue``): blink and head turn from FaceMesh.

Real photos through the real detector and mesh, never made-up landmarks: the project's
tests/data/people, and from ../shared (skipped when missing) ORL's closed-eye photos and
pad-dev's bona fide frames. A flat photo, tilted as a hand would tilt it, must never show a
head turn; two photos of one person with the head turned must. At the door (gpiozero's mock
pins, a real SQLite file, the real liveness model) a still face waits without being called an
attack, and a face that turns its head is let in.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.config import load_config
from device.daemon.cues import CueRule, CueSample, CueWatch
from device.daemon.run import SiteSettingsWatch
from device.errors import ConfigError, SettingInvalid
from device.liveness import LivenessCheck, LivenessSettings
from device.site_settings import write_site_settings
from device.vision.liveness import LivenessModel
from device.vision.motion_cues import eye_aspect_ratio, eye_openness, turn_parallax
from tests.conftest import DATA
from tests.liveness_support import BONA_FIDE, PRINT_ATTACKS, needs_pad_dev, pad_dev
from tests.test_liveness_door import NOWHERE, RED, RELAY, Rig, write_frames

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ORL = SHARED / "orl"
needs_orl = pytest.mark.skipif(not ORL.is_dir(), reason=f"{ORL} is missing (the project's "
                                                        "shared data)")
# Two frames of one live person, a second apart, from pad-dev's held-apart test part: the
# head turned from about 18 degrees one way to 14 the other (the mesh's own yaw estimate).
TURNED = ["bona/real_1600335530.jpg", "bona/real_1600335535.jpg"]

DEFAULT = CueRule("either")  # the default limits: head_turn_parallax 0.2, blink_drop 0.6
# How a hand tilts a photo in front of the camera: (yaw, pitch) of the paper, degrees.
TILTS = [(-30, 0), (30, 0), (-15, 0), (15, 0), (0, -25), (0, 25), (20, 20), (-20, -20)]


def tilted(image: np.ndarray, yaw: float, pitch: float) -> np.ndarray:
    """The photo as the camera sees it when the paper turns about its centre: the
    homography K R K^-1 of a plane in front of a camera (focal length 1.2 image widths)."""
    height, width = image.shape[:2]
    focal = 1.2 * max(width, height)
    camera = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]])
    a, b = math.radians(yaw), math.radians(pitch)
    turn = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    nod = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    rotation = turn @ nod
    centre = np.array([0.0, 0.0, focal])  # the paper's centre, one focal length away
    shift = centre - rotation @ centre
    plane = rotation + np.outer(shift, [0.0, 0.0, 1.0]) / focal
    homography = camera @ plane @ np.linalg.inv(camera)
    return cv2.warpPerspective(image, homography, (width, height),
                               borderMode=cv2.BORDER_REPLICATE)


def mesh_of(pipeline, image: np.ndarray):
    (face,) = pipeline.locate(image, max_faces=1)
    return face


def flat_photos() -> list[Path]:
    photos = sorted((DATA / "people").glob("*/*.jpg"))
    if (SHARED / "pad-dev").is_dir():
        photos += [pad_dev(name) for name in BONA_FIDE]
    return photos


def orl(subject: int, number: int) -> np.ndarray:
    """An ORL photo (92x112 grey) at four times its size, as a close face at the door."""
    image = cv2.imread(str(ORL / f"s{subject}" / f"{number}.pgm"))
    return cv2.resize(image, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)


# --- Head turn ---------------------------------------------------------------------------------


def test_a_flat_photo_tilted_every_way_never_shows_a_head_turn(pipeline):
    worst = {}
    for photo in flat_photos():
        image = cv2.imread(str(photo))
        first = mesh_of(pipeline, image).landmarks
        worst[photo.name] = max(turn_parallax(first, mesh_of(pipeline,
                                                             tilted(image, *tilt)).landmarks)
                                for tilt in TILTS)
    # Measured: at most 0.10 on these photos (0.12 for 99% of 5,682 warps of 394 photos).
    assert max(worst.values()) < 0.6 * DEFAULT.head_turn_parallax, worst


def test_the_same_photo_again_has_no_parallax_at_all(pipeline, people):
    image = cv2.imread(str(people["Colin_Powell"][0]))
    first = mesh_of(pipeline, image).landmarks
    assert turn_parallax(first, mesh_of(pipeline, image.copy()).landmarks) < 1e-3


def test_a_head_turned_between_two_photos_shows_parallax(pipeline, people):
    # Colin Powell's first and third photos: the mesh's yaw goes from +17 to -17 degrees.
    one, three = (mesh_of(pipeline, cv2.imread(str(people["Colin_Powell"][i]))) for i in (0, 2))
    assert one.quality.yaw > 10 and three.quality.yaw < -10
    parallax = turn_parallax(one.landmarks, three.landmarks)
    assert parallax > 1.5 * DEFAULT.head_turn_parallax, parallax  # measured: 0.40
    assert turn_parallax(three.landmarks, one.landmarks) > DEFAULT.head_turn_parallax


@needs_pad_dev
def test_a_live_head_turning_at_the_camera_shows_parallax(pipeline):
    first, second = (mesh_of(pipeline, cv2.imread(str(pad_dev(name)))) for name in TURNED)
    assert first.quality.yaw - second.quality.yaw > 25
    assert turn_parallax(first.landmarks, second.landmarks) > 1.5 * DEFAULT.head_turn_parallax


# --- Blink -------------------------------------------------------------------------------------


def test_open_eyes_have_a_plausible_eye_aspect_ratio_and_openness(pipeline):
    for photo in flat_photos():
        image = cv2.imread(str(photo))
        face = mesh_of(pipeline, image)
        assert 0.18 < eye_aspect_ratio(face.landmarks) < 0.4, photo.name  # measured 0.21-0.32
        assert eye_openness(image, face.landmarks) > 0.1, photo.name


@needs_orl
@pytest.mark.parametrize(("subject", "closed", "opened"), [
    (11, 9, [1, 2, 3, 5, 6]), (24, 8, [1, 3, 4, 9, 10]), (26, 6, [2, 3, 8, 9, 10])])
def test_closed_eyes_lower_the_openness_though_the_meshs_lids_stay_open(
        pipeline, subject, closed, opened):
    """Why the blink cue looks at grey levels, not at the eye aspect ratio: this FaceMesh
    draws an open eye's lids on a closed eye. Should a new mesh model follow the lids, this
    test fails: consider the aspect ratio again."""
    def measures(number):
        image = orl(subject, number)
        face = mesh_of(pipeline, image)
        return eye_aspect_ratio(face.landmarks), eye_openness(image, face.landmarks)

    open_ratio, open_openness = np.median([measures(n) for n in opened], axis=0)
    ratio, openness = measures(closed)
    assert ratio > 0.8 * open_ratio  # measured 0.86-0.98 of the open level
    assert openness < DEFAULT.blink_drop * open_openness  # measured 0.44-0.53


def test_a_still_photo_tilted_keeps_its_eyes_open(pipeline, people):
    for photo in people["Colin_Powell"] + people["Serena_Williams"]:
        image = cv2.imread(str(photo))
        level = eye_openness(image, mesh_of(pipeline, image).landmarks)
        for tilt in TILTS:
            view = tilted(image, *tilt)
            openness = eye_openness(view, mesh_of(pipeline, view).landmarks)
            assert openness > 0.7 * level, (photo.name, tilt)  # measured >= 0.78


# --- One track's watch -------------------------------------------------------------------------


def samples(pipeline, images: list[np.ndarray], rule: CueRule) -> list[CueSample]:
    return [CueSample.measure(image, mesh_of(pipeline, image).landmarks, rule)
            for image in images]


def test_a_still_face_shows_no_cue_however_long_it_stays(pipeline, people):
    image = cv2.imread(str(people["Serena_Williams"][0]))
    watch = CueWatch(DEFAULT)
    for sample in samples(pipeline, [image] * 40, DEFAULT):
        watch.add(sample)
    assert watch.seen is None and watch.parallax < 1e-3


def test_a_head_turn_is_seen_and_a_reset_asks_for_it_again(pipeline, people):
    rule = CueRule("head_turn")
    one, three = (cv2.imread(str(people["Colin_Powell"][i])) for i in (0, 2))
    watch = CueWatch(rule)
    first, turned = samples(pipeline, [one, three], rule)
    assert first.openness is None  # blinks are not measured when not watched
    watch.add(first)
    assert watch.seen is None
    watch.add(turned)
    assert watch.seen == "head_turn" and watch.parallax > rule.head_turn_parallax
    watch.reset()
    watch.add(turned)
    assert watch.seen is None  # a new first frame


@needs_orl
def test_eyes_that_close_and_open_again_are_a_blink(pipeline):
    rule = CueRule("blink")
    watch = CueWatch(rule)
    opened = [orl(26, n) for n in (2, 3, 8, 9, 10)]
    for sample in samples(pipeline, opened + [orl(26, 6)], rule):
        watch.add(sample)
    assert watch.seen is None  # closed, not yet open again
    (again,) = samples(pipeline, [orl(26, 2)], rule)
    watch.add(again)
    assert watch.seen == "blink"


def test_a_motion_cue_must_be_one_of_the_known_ones():
    with pytest.raises(ValueError, match="unknown motion cue"):
        CueRule("wink")
    config = load_config(None, environ={}, places=NOWHERE)
    assert config.liveness.motion_cue == "off"  # a still face is judged from texture alone
    assert LivenessSettings.from_config(config.liveness).motion_cue == "off"
    with pytest.raises(ConfigError, match=r'liveness.motion_cue on the command line must be '
                                          r'"off", "blink", "head_turn" or "either" '
                                          r"\(did you mean 'head_turn'\?\), got 'headturn'"):
        load_config(None, {"liveness.motion_cue": "headturn"}, environ={}, places=NOWHERE)
    with pytest.raises(ConfigError, match="liveness.head_turn_parallax .* from 0.05 to 1"):
        load_config(None, {"liveness.head_turn_parallax": 2}, environ={}, places=NOWHERE)


# --- At the door -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def liveness_model() -> LivenessModel:
    return LivenessModel.by_name("")


@pytest.fixture
def door_with(tmp_path, pipeline, factory, liveness_model):
    rigs = []

    def make(photos, motion_cue: str, frames_each: int = 6) -> Rig:
        scene = write_frames(tmp_path / f"scene{len(rigs)}", photos, frames_each)
        check = LivenessCheck.with_model(liveness_model, LivenessSettings(motion_cue=motion_cue))
        folder = tmp_path / f"rig{len(rigs)}"
        folder.mkdir()
        rig = Rig(folder, pipeline, factory, scene, liveness=check)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()


@needs_pad_dev
@pytest.mark.parametrize("motion_cue", ["off", "blink", "head_turn", "either"])
def test_a_still_live_face_opens_only_without_a_motion_cue_and_is_never_an_attack(
        door_with, motion_cue, caplog):
    live = pad_dev(BONA_FIDE[0])
    rig = door_with([live], motion_cue)
    rig.enrol("Lee Live", live)
    with caplog.at_level(logging.INFO, logger="device"):
        rig.run()
    if motion_cue == "off":
        assert rig.kinds() == ["granted"] and rig.lit(RELAY)
        assert "motion_cue" not in rig.events.list()[0].detail
        return
    assert rig.kinds() == []  # waiting is not an attack, nor a denial
    assert not rig.lit(RELAY) and not rig.lit(RED) and rig.door.is_locked
    waits = [r.getMessage() for r in caplog.records if "liveness.motion_cue" in r.getMessage()]
    assert len(waits) == 1  # once for the track, not at every frame
    assert waits[0].startswith("Lee Live is recognised and live; the door opens after a ")


@needs_pad_dev
@pytest.mark.parametrize("motion_cue", ["head_turn", "either"])
def test_a_live_face_that_turns_its_head_opens_the_door(door_with, motion_cue):
    rig = door_with([pad_dev(name) for name in TURNED * 2], motion_cue, frames_each=3)
    rig.enrol("Lee Live", pad_dev(BONA_FIDE[0]))  # another frame of the same session
    rig.run()
    assert rig.kinds() == ["granted"] and rig.lit(RELAY)
    (granted,) = rig.events.list()
    assert granted.person_name == "Lee Live"
    assert granted.detail["motion_cue"] == motion_cue
    assert granted.detail["motion_cue_seen"] == "head_turn"
    assert granted.detail["head_turn_parallax"] >= 0.2


@needs_pad_dev
def test_a_printed_photo_is_still_an_attack_with_a_motion_cue_asked_for(door_with):
    attack = pad_dev(PRINT_ATTACKS[0])
    rig = door_with([attack], "either")
    rig.enrol("Pat Printed", attack)
    rig.run()
    assert rig.kinds() == ["attack"] and not rig.lit(RELAY)


def test_the_start_line_names_the_motion_cue(liveness_model):
    for cue, words in (("off", " frames)"), ("blink", " frames, and a blink)"),
                       ("head_turn", " frames, and a head turn)"),
                       ("either", " frames, and a blink or a head turn)")):
        check = LivenessCheck.with_model(liveness_model, LivenessSettings(motion_cue=cue))
        assert check.describe(3).endswith(words)


@needs_pad_dev
def test_the_settings_page_may_ask_for_a_motion_cue_while_the_door_runs(door_with):
    rig = door_with([pad_dev(BONA_FIDE[0])], "off")
    assert rig.loop.tracker.cue is None
    config = load_config(None, {"paths.data_dir": str(rig.db_path.parent),
                                "web.enabled": False}, environ={}, places=NOWHERE)
    watch = SiteSettingsWatch(config, rig.loop, rig.door, rig.events)
    write_site_settings(rig.db_path, {"liveness.motion_cue": "head_turn"}, by="admin")
    watch.poll(time.monotonic() + 10)
    rig.loop.step()  # the tracker follows at the next frame
    assert rig.loop.tracker.cue == CueRule("head_turn")
    with pytest.raises(SettingInvalid, match="liveness.motion_cue"):
        write_site_settings(rig.db_path, {"liveness.motion_cue": "nod"}, by="admin")
    write_site_settings(rig.db_path, {"liveness.motion_cue": None}, by="admin")
    watch.poll(time.monotonic() + 20)
    rig.loop.step()
    assert rig.loop.tracker.cue is None
