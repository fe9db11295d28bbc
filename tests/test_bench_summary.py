"""bench/summary.py's issue-17 parts (stills, the door frame with liveness, the one-core table)
read a saved report, so they are checked on a small hand-made one: no timing here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import compare  # noqa: E402
import summary  # noqa: E402


def _stills(ours_ms: float, yunet_ms: float, dlib_ms: float) -> dict:
    def entry(ms: float) -> dict:
        return {"photos_with_a_face": 200, "ms_per_photo_with_startup": ms,
                "ms_per_photo_after_startup": ms / 2, "startup_s": 0.5}

    return {"photos": 200, "rounds": 3, "folder": "../shared/data/lfw-a-singles",
            "systems": {"facegate": entry(ours_ms), "yunet_sface": entry(yunet_ms),
                        "face_recognition": entry(dlib_ms)}}


def _report(stills: dict, one_face_ms: float = 10.0) -> dict:
    frames = {f: {"faces": 1, "whole": {"median_ms": one_face_ms, "p90_ms": one_face_ms}}
              for f in summary.FRAMES}
    peer_frames = {f: {"faces": 1, "whole": {"median_ms": 30.0, "p90_ms": 31.0}}
                   for f in summary.FRAMES}
    return {"stills": stills, "frames": {"systems": {
        "facegate": {"liveness": "liveness_model", "frames": frames},
        "yunet_sface": {"frames": peer_frames}}}}


def test_stills_speedup_is_the_peers_time_over_ours():
    speedup = summary.stills_speedup(_report(_stills(10.0, 15.0, 100.0)))
    assert speedup["yunet_sface"]["ms_per_photo_with_startup"] == 1.5
    assert speedup["face_recognition"]["ms_per_photo_after_startup"] == 10.0


@pytest.mark.parametrize(("ours_ms", "met"), [(10.0, True), (11.0, False)])
def test_issue_17_targets_are_judged_against_their_thresholds(ours_ms, met):
    report = _report(_stills(ours_ms, 15.0, 110.0), one_face_ms=ours_ms)
    speedup = {"yunet_sface": {"one face": round(30.0 / ours_ms, 2)}}
    targets = summary.issue_17_targets(report, speedup)
    assert len(targets) == 3
    assert all(t["issue"] == 17 for t in targets.values())
    stills_yunet = next(t for name, t in targets.items() if "YuNet" in name and "embed" in name)
    assert stills_yunet["met"] is met


def test_a_report_without_stills_has_no_stills_targets():
    assert summary.stills_speedup({"frames": {}}) == {}


def test_still_photos_are_evenly_spaced_and_the_same_every_time(tmp_path):
    for person in range(10):
        folder = tmp_path / f"person_{person:02d}"
        folder.mkdir()
        (folder / f"person_{person:02d}_0001.jpg").write_bytes(b"")
    chosen = compare.still_photos(tmp_path, 5)
    assert [p.parent.name for p in chosen] == [f"person_{i:02d}" for i in (0, 2, 4, 6, 8)]
    assert chosen == compare.still_photos(tmp_path, 5)


def test_the_one_core_table_lists_every_stage_and_the_budget():
    figures = {"median_ms": 1.0, "p90_ms": 2.0}
    one_core = {
        "machine": {"cpu": "a cpu"}, "threads": {"core": 0},
        "door_frame": {"stages": {"detection": figures, "between the stages": {"median_ms": 0.5}},
                       "whole": figures, "fps": 1000.0, "decode JPEG 640x480": figures},
        "still_path": {"stages": {"detection (thorough)": figures},
                       "whole (read, decode, thorough pipeline)": figures,
                       "frames": {"640x480, one face": {"detection (thorough)": figures,
                                                        "whole": figures}}},
        "budget": {"fps": 15.0, "budget_ms": 66.7, "door_frame_ms": 1.0, "headroom": 66.7}}
    lines = summary.one_core_table(one_core)
    assert any("door frame 640x480: detection | 1.00 | 2.00" in line for line in lines)
    assert any("between the stages | 0.50 |  |" in line for line in lines)
    assert lines[-1].startswith("| 15 fps: budget per frame")
