"""The camera layer on real image files and small videos made from them; no hardware needed."""

from __future__ import annotations

import logging
import shutil
import sys
import time
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.camera import (
    ENV_VAR,
    Camera,
    CameraError,
    EndOfStream,
    Frame,
    OpenCVCamera,
    Picamera2Camera,
    ReplayCamera,
    ResilientCamera,
    open_camera,
)
from device.camera.base import Fitted, fit_to_size
from tests.conftest import DATA

PEOPLE = sorted((DATA / "people").glob("*/*.jpg"))  # two folders of three 250x250 photos
STRANGERS = sorted((DATA / "strangers").glob("*.jpg"))


def same_image(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a, b))


def load(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, path
    return image


@pytest.fixture
def people_folder(tmp_path) -> Path:
    """tests/data/people copied: Colin_Powell/ then Serena_Williams/, three photos each."""
    folder = tmp_path / "people"
    shutil.copytree(DATA / "people", folder)
    return folder


def write_video(path: Path, images: list[Path], size=(320, 240), fps=10) -> list[np.ndarray]:
    """An MJPG .avi of ``images`` resized to ``size``; returns the frames as written."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened(), "this OpenCV cannot write MJPG into .avi"
    frames = [cv2.resize(load(image), size) for image in images]
    for frame in frames:
        writer.write(frame)
    writer.release()
    return frames


def read_all(camera: Camera) -> list[Frame]:
    frames = []
    while True:
        try:
            frames.append(camera.read())
        except EndOfStream:
            return frames


# --- Replay of a folder -----------------------------------------------------------------


def test_replay_plays_a_folder_in_name_order_into_sub_folders(tmp_path, people_folder):
    (people_folder / "0_first.jpg").write_bytes(STRANGERS[0].read_bytes())
    (people_folder / "z_last.jpg").write_bytes(STRANGERS[1].read_bytes())
    expected = [people_folder / "0_first.jpg", *sorted(people_folder.glob("*/*.jpg")),
                people_folder / "z_last.jpg"]
    with ReplayCamera(people_folder, fps=0, loop=False) as camera:
        frames = read_all(camera)
    assert len(frames) == len(expected) == 8
    for frame, path in zip(frames, expected, strict=True):
        assert same_image(frame.image, load(path)), path
    assert [frame.index for frame in frames] == list(range(8))
    stamps = [frame.timestamp for frame in frames]
    assert stamps == sorted(stamps)
    assert abs(stamps[-1] - time.monotonic()) < 60  # the monotonic clock, not wall time
    assert all(frame.full is None for frame in frames)  # kept as it is: no bigger picture


def test_replay_keeps_the_frame_rate(people_folder):
    with ReplayCamera(people_folder, fps=50) as camera:
        started = time.monotonic()
        frames = [camera.read() for _ in range(10)]
        elapsed = time.monotonic() - started
    assert elapsed >= 0.15  # 9 intervals of 20 ms; no upper bound on a shared machine
    assert frames[-1].timestamp - frames[0].timestamp >= 0.15


def test_replay_loops_and_keeps_counting(people_folder):
    with ReplayCamera(people_folder, fps=0) as camera:
        frames = [camera.read() for _ in range(14)]
    assert [frame.index for frame in frames] == list(range(14))
    assert same_image(frames[6].image, frames[0].image)
    assert same_image(frames[13].image, frames[1].image)


def test_replay_without_loop_ends_with_end_of_stream(people_folder):
    camera = ReplayCamera(people_folder, fps=0, loop=False)
    camera.open()
    assert len([camera.read() for _ in range(6)]) == 6
    with pytest.raises(EndOfStream, match="played all 6"):
        camera.read()
    with pytest.raises(CameraError):  # EndOfStream is a CameraError, for callers that stop
        camera.read()
    camera.close()


def test_replay_skips_unreadable_files_with_one_warning_each(tmp_path, caplog):
    folder = tmp_path / "clips"
    folder.mkdir()
    shutil.copy(STRANGERS[0], folder / "a.jpg")
    (folder / "b.jpg").write_bytes(b"not a jpeg at all")
    (folder / "c.txt").write_text("notes about the door")
    shutil.copy(STRANGERS[1], folder / "d.jpg")
    (folder / ".hidden.jpg").write_bytes(b"editor litter")
    with caplog.at_level(logging.WARNING, logger="device.camera"):
        with ReplayCamera(folder, fps=0) as camera:
            frames = [camera.read() for _ in range(6)]  # three rounds of the two good ones
    assert same_image(frames[0].image, load(STRANGERS[0]))
    assert same_image(frames[1].image, load(STRANGERS[1]))
    assert same_image(frames[2].image, load(STRANGERS[0]))
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 2, warnings  # once per bad file, not once per loop
    assert "b.jpg" in warnings[0] and "c.txt" in warnings[1]


def test_replay_of_a_folder_without_images_is_a_camera_error(tmp_path):
    (tmp_path / "readme.txt").write_text("no pictures here")
    with ReplayCamera(tmp_path, fps=0) as camera, pytest.raises(CameraError, match="no file"):
        camera.read()
    with pytest.raises(CameraError, match="does not exist"):
        ReplayCamera(tmp_path / "missing").open()


def test_replay_stops_serving_frames_of_files_removed_from_its_folder(people_folder, caplog):
    colin = sorted((people_folder / "Colin_Powell").glob("*.jpg"))
    with caplog.at_level(logging.WARNING, logger="device.camera"):
        with ReplayCamera(people_folder, fps=0) as camera:
            assert len([camera.read() for _ in range(6)]) == 6  # every frame is cached now
            shutil.rmtree(people_folder / "Serena_Williams")
            frames = [camera.read() for _ in range(9)]
    for frame, path in zip(frames, colin * 3, strict=True):
        assert same_image(frame.image, load(path)), path
    (changed,) = [r.getMessage() for r in caplog.records if "changed" in r.getMessage()]
    assert "3 file(s) removed, 0 changed, 0 added; 3 to play" in changed


def test_replay_plays_files_added_to_or_changed_in_its_folder(people_folder, caplog):
    serena = sorted((people_folder / "Serena_Williams").glob("*.jpg"))
    with caplog.at_level(logging.WARNING, logger="device.camera"):
        with ReplayCamera(people_folder, fps=0) as camera:
            first = [camera.read() for _ in range(6)]
            shutil.copy(STRANGERS[0], people_folder / "zz_newcomer.jpg")
            shutil.copy(STRANGERS[1], serena[0])  # same name, new picture
            frames = [camera.read() for _ in range(7)]
    assert same_image(frames[3].image, load(STRANGERS[1]))  # not the cached old picture
    assert not same_image(frames[3].image, first[3].image)
    assert same_image(frames[6].image, load(STRANGERS[0]))
    assert any("0 file(s) removed, 1 changed, 1 added; 7 to play" in r.getMessage()
               for r in caplog.records)


def test_replay_lists_its_folder_again_within_the_rescan_time(people_folder):
    with ReplayCamera(people_folder, fps=0, rescan=0.0) as camera:
        camera.read()
        time.sleep(0.05)  # past a tick of the kernel's coarse clock, which stamps mtimes
        shutil.copy(STRANGERS[0], people_folder / "Colin_Powell" / "Colin_Powell_0001b.jpg")
        second = camera.read()  # listed again before this frame, not at the end of the pass
    assert same_image(second.image, load(STRANGERS[0]))


def test_an_emptied_replay_folder_is_a_camera_error_not_cached_frames(people_folder):
    with ReplayCamera(people_folder, fps=0) as camera:
        assert len([camera.read() for _ in range(6)]) == 6
        for path in people_folder.glob("*/*.jpg"):
            path.unlink()
        with pytest.raises(CameraError, match="is empty: its files were removed"):
            camera.read()


def test_replay_plays_a_single_image_file(tmp_path):
    with ReplayCamera(DATA / "couple.jpg", fps=0, loop=False) as camera:
        frames = read_all(camera)
    assert len(frames) == 1 and same_image(frames[0].image, load(DATA / "couple.jpg"))


# --- Replay of a video ------------------------------------------------------------------


def test_replay_plays_a_video_file_frame_by_frame(tmp_path):
    written = write_video(tmp_path / "door.avi", PEOPLE)
    with ReplayCamera(tmp_path / "door.avi", fps=0, loop=False) as camera:
        frames = read_all(camera)
    assert len(frames) == len(PEOPLE)
    for frame, original in zip(frames, written, strict=True):
        assert frame.image.shape == (240, 320, 3) and frame.image.dtype == np.uint8
        # MJPG is lossy: each frame is near the one written, and far from the others.
        assert np.abs(frame.image.astype(int) - original).mean() < 8
    assert np.abs(frames[0].image.astype(int) - written[3]).mean() > 20


def test_replay_loops_a_video(tmp_path):
    write_video(tmp_path / "door.avi", STRANGERS + STRANGERS[:1])
    with ReplayCamera(tmp_path / "door.avi", fps=0) as camera:
        frames = [camera.read() for _ in range(7)]
    assert [frame.index for frame in frames] == list(range(7))
    assert same_image(frames[3].image, frames[0].image)


def test_replay_refuses_a_file_that_is_neither_image_nor_video(tmp_path):
    (tmp_path / "clip.avi").write_bytes(b"\x00" * 4096)
    with pytest.raises(CameraError, match="neither an image nor a video"):
        ReplayCamera(tmp_path / "clip.avi").open()


# --- Fitting to the detection size ------------------------------------------------------


def test_replay_letterboxes_to_the_detection_size_keeping_the_original_as_full():
    original = load(DATA / "couple.jpg")  # 1280x892: wider than 4:3
    with ReplayCamera(DATA / "couple.jpg", fps=0, size=(640, 480)) as camera:
        frame = camera.read()
    assert frame.image.shape == (480, 640, 3)
    assert frame.full is not None and same_image(frame.full, original)
    # Bars above and below, none at the sides, picture in the middle.
    top = round((480 - 892 / 2) / 2)
    assert frame.image[: top - 1].max() == 0 and frame.image[-(top - 1):].max() == 0
    assert frame.image[240].max() > 0
    # A point of the detection image lands on the same point of the full picture.
    x, y = 400, 300
    fx, fy = frame.to_full(np.array([x, y]))
    assert np.abs(original[round(fy), round(fx)].astype(int) - frame.image[y, x]).max() < 40
    assert frame.to_full(np.array([[0, top], [640, 480 - top]])) == pytest.approx(
        np.array([[0, 0], [1280, 892]]), abs=3)


def test_a_small_source_is_enlarged_with_no_full_picture():
    small = load(STRANGERS[0])  # 250x250
    fitted = fit_to_size(small, (640, 480))
    assert fitted.image.shape == (480, 640, 3)
    assert fitted.full is None
    assert fitted.image[:, :70].max() == 0 and fitted.image[:, -70:].max() == 0
    assert fit_to_size(small, None).image is small
    assert fit_to_size(small, (250, 250)).image is small


def test_to_full_is_the_identity_without_a_full_picture():
    frame = Frame(np.zeros((4, 4, 3), np.uint8), 0.0, 0)
    assert frame.to_full(np.array([[1.5, 2.0]])) == pytest.approx(np.array([[1.5, 2.0]]))


# --- OpenCV sources ---------------------------------------------------------------------


@pytest.mark.parametrize("source", [99, "/dev/video99"])
def test_opencv_camera_on_a_missing_device_says_so_in_one_line(source):
    camera = OpenCVCamera(source)
    with pytest.raises(CameraError) as raised:
        camera.open()
    message = str(raised.value)
    assert "\n" not in message and "/dev/video99" in message and "no such device" in message


def test_opencv_camera_reads_a_video_file_letterboxed_then_ends(tmp_path):
    write_video(tmp_path / "door.avi", STRANGERS, size=(320, 320))
    with OpenCVCamera(str(tmp_path / "door.avi"), size=(640, 480)) as camera:
        frames = read_all(camera)
    assert len(frames) == 2
    assert frames[0].image.shape == (480, 640, 3) and frames[0].full is None
    assert [frame.index for frame in frames] == [0, 1]


def test_opencv_camera_cannot_open_what_is_not_a_stream(tmp_path):
    (tmp_path / "junk.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(CameraError, match="cannot open it .not a video") as raised:
        OpenCVCamera(str(tmp_path / "junk.bin")).open()
    assert "\n" not in str(raised.value)


def test_opencv_camera_on_an_unreachable_stream_says_so_in_one_line():
    # Port 9 (discard) on this machine: refused at once, no network needed.
    with pytest.raises(CameraError, match="unreachable") as raised:
        OpenCVCamera("rtsp://127.0.0.1:9/door").open()
    assert "\n" not in str(raised.value) and "rtsp://127.0.0.1:9/door" in str(raised.value)


def picamera2_installed() -> bool:
    try:
        import picamera2  # noqa: F401
    except ImportError:
        return False
    return True


def test_picamera2_is_a_camera_error_where_it_is_not_installed():
    if picamera2_installed():
        pytest.skip("picamera2 is installed here")
    with pytest.raises(CameraError, match="picamera2 is not installed"):
        Picamera2Camera().open()


class FakePicamera2:
    """Just enough of picamera2 for ``Picamera2Camera``, delivering what a Pi delivers: main
    as "RGB888" (B, G, R in memory) and lores as I420 padded to a wider stride."""

    STRIDE_PAD = 64  # bytes of padding on each Y row, as libcamera aligns strides

    def __init__(self, camera_num: int = 0) -> None:
        self.picture = load(DATA / "couple.jpg")[:780, :1040]  # cut to 4:3
        self.config: dict = {}
        self.running = False
        self.closed = False

    def create_preview_configuration(self, **config) -> dict:
        return config

    def configure(self, config: dict) -> None:
        self.config = config

    def start(self) -> None:
        self.running = True

    def stop(self) -> None:
        self.running = False

    def close(self) -> None:
        self.closed = True

    def capture_arrays(self, names: list[str]) -> tuple[list[np.ndarray], dict]:
        assert self.running and names == ["main", "lores"]
        main = cv2.resize(self.picture, self.config["main"]["size"], interpolation=cv2.INTER_AREA)
        width, height = self.config["lores"]["size"]
        small = cv2.resize(self.picture, (width, height), interpolation=cv2.INTER_AREA)
        planes = cv2.cvtColor(small, cv2.COLOR_BGR2YUV_I420).ravel()
        y, u, v = np.split(planes, [width * height, width * height * 5 // 4])
        pad = self.STRIDE_PAD
        padded = [np.pad(y.reshape(height, width), ((0, 0), (0, pad))),
                  np.pad(u.reshape(height // 2, width // 2), ((0, 0), (0, pad // 2))),
                  np.pad(v.reshape(height // 2, width // 2), ((0, 0), (0, pad // 2)))]
        lores = np.concatenate([plane.ravel() for plane in padded])
        return [main, lores.reshape(height * 3 // 2, width + pad)], {"SensorTimestamp": 0}


@pytest.fixture
def fake_picamera2(monkeypatch) -> type[FakePicamera2]:
    picamera2 = types.ModuleType("picamera2")
    picamera2.Picamera2 = FakePicamera2
    libcamera = types.ModuleType("libcamera")
    libcamera.ColorSpace = types.SimpleNamespace(Smpte170m=lambda: "smpte170m")
    monkeypatch.setitem(sys.modules, "picamera2", picamera2)
    monkeypatch.setitem(sys.modules, "libcamera", libcamera)
    return FakePicamera2


def test_pi_camera_turns_padded_i420_lores_into_bgr_matching_main(fake_picamera2):
    camera = Picamera2Camera(size=(640, 480), full_size=(1280, 960))
    with camera:
        frame = camera.read()
        config = camera._picam.config
    assert config["main"] == {"size": (1280, 960), "format": "RGB888"}
    assert config["lores"] == {"size": (640, 480), "format": "YUV420"}
    assert config["colour_space"] == "smpte170m"  # the range OpenCV's YUV arithmetic assumes
    assert frame.image.shape == (480, 640, 3) and frame.image.flags["C_CONTIGUOUS"]
    assert frame.full is not None and frame.full.shape == (960, 1280, 3)
    expected = cv2.resize(frame.full, (640, 480), interpolation=cv2.INTER_AREA).astype(int)
    # Chroma swapped (OpenCV's COLOR_YUV420p2BGR is YV12) would be off by about 20 here.
    assert np.abs(frame.image.astype(int) - expected).mean() < 3
    assert frame.to_full(np.array([320, 240])) == pytest.approx([640, 480])


# --- open_camera: the one place that picks ----------------------------------------------


def test_open_camera_parses_each_form_of_spec(tmp_path, people_folder):
    write_video(tmp_path / "door.avi", STRANGERS)
    demo = people_folder
    index = open_camera("0", demo_folder=demo)
    assert isinstance(index, OpenCVCamera) and index.source == 0
    for url in ("rtsp://door.local:554/stream", "http://cam/video.mjpg", "HTTPS://cam/x"):
        camera = open_camera(url, demo_folder=demo)
        assert isinstance(camera, OpenCVCamera) and camera.source == url
    assert isinstance(open_camera("/dev/video2", demo_folder=demo), OpenCVCamera)
    assert isinstance(open_camera("picamera2", demo_folder=demo), Picamera2Camera)
    folder = open_camera(str(people_folder), demo_folder=demo, fps=0, loop=False)
    assert isinstance(folder, ReplayCamera) and folder.source == people_folder
    assert not folder.loop and folder.size == (640, 480)
    video = open_camera(f" {tmp_path / 'door.avi'} ", demo_folder=demo)
    assert isinstance(video, ReplayCamera) and video.source == tmp_path / "door.avi"
    with video:
        assert video.read().image.shape == (480, 640, 3)


@pytest.mark.parametrize("spec", ["webcam", "/no/such/folder", "", "ftp://cam/x"])
def test_open_camera_refuses_anything_else_in_one_sentence(people_folder, spec):
    with pytest.raises(CameraError) as raised:
        open_camera(spec, demo_folder=people_folder)
    assert str(raised.value) == (f"camera source '{spec}' is not a folder, video file, URL, "
                                 f"device index or 'picamera2'")


def test_auto_falls_back_to_the_demo_replay_and_says_why(people_folder, monkeypatch, caplog):
    if Path("/dev/video0").exists():
        pytest.skip("this machine has a webcam: auto would choose it")
    monkeypatch.delenv(ENV_VAR, raising=False)
    with caplog.at_level(logging.INFO, logger="device.camera"):
        camera = open_camera("auto", demo_folder=people_folder, fps=0)
    if isinstance(camera, Picamera2Camera):
        pytest.skip("this machine has a Pi camera: auto chose it")
    assert isinstance(camera, ReplayCamera) and camera.source == people_folder
    (message,) = [r.getMessage() for r in caplog.records if "auto chose" in r.getMessage()]
    assert f"replay:{people_folder}" in message
    assert "picamera2" in message and "/dev/video0: no such device" in message
    with camera:
        assert camera.read().image.shape == (480, 640, 3)


def test_auto_without_camera_or_demo_folder_is_a_camera_error(tmp_path, monkeypatch):
    if Path("/dev/video0").exists() or picamera2_installed():
        pytest.skip("this machine may have a camera")
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(CameraError, match="no camera found and no demo folder"):
        open_camera("auto", demo_folder=tmp_path / "missing")


def test_the_environment_variable_overrides_auto_only(tmp_path, people_folder, monkeypatch):
    write_video(tmp_path / "door.avi", STRANGERS)
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "door.avi"))
    chosen = open_camera("auto", demo_folder=people_folder)
    assert isinstance(chosen, ReplayCamera) and chosen.source == tmp_path / "door.avi"
    explicit = open_camera(str(people_folder), demo_folder=people_folder)
    assert explicit.source == people_folder
    monkeypatch.setenv(ENV_VAR, "nonsense")
    with pytest.raises(CameraError, match="'nonsense'"):
        open_camera("auto", demo_folder=people_folder)


# --- ResilientCamera --------------------------------------------------------------------


class FakeClock:
    """A monotonic clock that moves only when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FlakyCamera(Camera):
    """Plays the strangers; its 3rd to 5th reads in all fail, as a loose cable would.

    ``refuse_opens`` makes that many of the following ``open()`` calls fail too.
    """

    # Class-wide: a new instance is the same flaky device opened again.
    reads = 0
    opens = 0
    failing_reads = range(3, 6)
    refuse_opens = 0

    def __init__(self) -> None:
        super().__init__("flaky")
        self._replay = ReplayCamera(DATA / "strangers", fps=0)
        self.closed = False

    def open(self) -> None:
        FlakyCamera.opens += 1
        if FlakyCamera.refuse_opens:
            FlakyCamera.refuse_opens -= 1
            raise CameraError("flaky: device busy")
        self._replay.open()

    def read(self) -> Frame:
        FlakyCamera.reads += 1
        if FlakyCamera.reads in FlakyCamera.failing_reads:
            raise CameraError(f"flaky: read {FlakyCamera.reads} failed")
        return self._replay.read()

    def close(self) -> None:
        self.closed = True
        self._replay.close()


@pytest.fixture
def flaky():
    FlakyCamera.reads = FlakyCamera.opens = FlakyCamera.refuse_opens = 0
    FlakyCamera.failing_reads = range(3, 6)
    return FlakyCamera


def test_resilient_camera_returns_none_while_down_and_recovers(flaky, caplog):
    clock = FakeClock()
    made: list[FlakyCamera] = []

    def factory() -> FlakyCamera:
        made.append(FlakyCamera())
        return made[-1]

    with caplog.at_level(logging.INFO, logger="device.camera"):
        with ResilientCamera(factory, clock=clock, sleep=clock.sleep) as camera:
            results = [camera.read() for _ in range(12)]
    # reads 1, 2 fine; read 3 fails (down); each reopen's first read fails (4, 5); then fine.
    assert [result is not None for result in results[:2]] == [True, True]
    assert results[2] is None
    good = [result for result in results if result is not None]
    assert len(good) >= 5 and results[-1] is not None
    assert [frame.index for frame in good] == list(range(len(good)))  # across reopens
    assert camera.outages == 3  # three reads failed, each after a reopen
    assert made[0].closed  # the failed camera was closed before the next was made
    assert all(step <= 0.5 for step in clock.sleeps)  # never blocks the loop for long
    lost = [r for r in caplog.records if r.getMessage().startswith("camera lost")]
    back = [r for r in caplog.records if r.getMessage().startswith("camera back after")]
    assert len(lost) == 3 and len(back) == 3


def test_resilient_camera_backs_off_exponentially_while_reopening_fails(flaky):
    clock = FakeClock()
    camera = ResilientCamera(FlakyCamera, backoff=(0.5, 1, 2, 5, 10), poll=100,
                             clock=clock, sleep=clock.sleep)
    flaky.failing_reads = range(3, 4)  # one read fails, then six reopens are refused
    camera.open()
    assert camera.read() is not None and camera.read() is not None
    flaky.refuse_opens = 6
    lost_at = clock.now
    assert camera.read() is None and not camera.is_up
    attempts = []
    while not camera.is_up:
        before = flaky.opens
        frame = camera.read()
        assert (frame is None) != camera.is_up
        if flaky.opens > before:
            attempts.append(clock.now - lost_at)
    # Tries at +0.5, then 1, 2, 5, 10, 10 s apart, the seventh succeeds.
    gaps = np.diff([0.0, *attempts])
    assert gaps == pytest.approx([0.5, 1, 2, 5, 10, 10, 10])
    assert camera.outages == 1
    assert camera.read() is not None


def test_resilient_camera_survives_a_folder_that_vanishes_and_returns(tmp_path, caplog):
    folder = tmp_path / "usb"
    shutil.copytree(DATA / "strangers", folder)
    clock = FakeClock()
    camera = ResilientCamera(lambda: ReplayCamera(folder, fps=0), clock=clock,
                             sleep=clock.sleep)
    with caplog.at_level(logging.WARNING, logger="device.camera"), camera:
        assert camera.read() is not None and camera.is_up
        folder.rename(tmp_path / "away")
        assert [camera.read() for _ in range(5)] == [None] * 5
        assert not camera.is_up
        (tmp_path / "away").rename(folder)
        frames = [camera.read() for _ in range(30)]
        assert camera.is_up and frames[-1] is not None and camera.outages == 1
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("camera lost: replay source") for m in messages) == 1
    (back,) = [m for m in messages if m.startswith("camera back after")]
    assert "replay:" in back


def test_resilient_camera_is_down_while_the_replay_folder_is_empty(people_folder, caplog):
    clock = FakeClock()
    camera = ResilientCamera(lambda: ReplayCamera(people_folder, fps=0), clock=clock,
                             sleep=clock.sleep)
    photos = {path: path.read_bytes() for path in people_folder.glob("*/*.jpg")}
    with caplog.at_level(logging.WARNING, logger="device.camera"), camera:
        assert all(camera.read() is not None for _ in range(6))
        for path in photos:
            path.unlink()
        assert [camera.read() for _ in range(5)] == [None] * 5
        assert not camera.is_up and camera.outages == 1
        for path, data in photos.items():
            path.write_bytes(data)
        assert any(camera.read() is not None for _ in range(30)) and camera.is_up
    messages = [r.getMessage() for r in caplog.records]
    assert sum("is empty: its files were removed" in m for m in messages) == 1
    assert sum(m.startswith("camera back after") for m in messages) == 1


def test_resilient_camera_starting_without_a_camera_waits_for_one(tmp_path):
    folder = tmp_path / "later"
    clock = FakeClock()
    camera = ResilientCamera(lambda: ReplayCamera(folder, fps=0), clock=clock,
                             sleep=clock.sleep)
    assert camera.read() is None and camera.outages == 1 and not camera.is_up
    shutil.copytree(DATA / "strangers", folder)
    assert any(camera.read() is not None for _ in range(10))
    camera.close()


def test_resilient_camera_passes_end_of_stream_through(people_folder):
    camera = ResilientCamera(lambda: ReplayCamera(people_folder, fps=0, loop=False))
    with camera:
        assert all(camera.read() is not None for _ in range(6))
        with pytest.raises(EndOfStream):
            camera.read()
    assert camera.outages == 0


def test_fitted_frames_carry_the_index_and_time_of_their_camera():
    class Still(Camera):
        def open(self) -> None: ...
        def close(self) -> None: ...

        def read(self) -> Frame:
            return self._frame(Fitted(np.zeros((2, 2, 3), np.uint8), None, (0, 0), (1, 1)))

    camera = Still("still")
    before = time.monotonic()
    frames = [camera.read() for _ in range(3)]
    assert [frame.index for frame in frames] == [0, 1, 2]
    assert before <= frames[0].timestamp <= frames[2].timestamp <= time.monotonic()
    assert repr(camera) == "<Still still>"


# --- Where the demo replay is allowed, and how the camera is mounted ------------------------


def test_the_demo_replay_is_only_for_a_checkout_run_by_hand():
    from device.camera.factory import demo_allowed

    assert demo_allowed(real_gpio=False, environ={}, checkout=True)
    assert not demo_allowed(real_gpio=False, environ={}, checkout=False)  # installed
    assert not demo_allowed(real_gpio=True, environ={}, checkout=True)  # a real door
    assert not demo_allowed(real_gpio=False, environ={"INVOCATION_ID": "abc"}, checkout=True)
    assert not demo_allowed(real_gpio=False, environ={"NOTIFY_SOCKET": "/run/x"}, checkout=True)


def test_auto_without_a_camera_and_no_demo_allowed_is_a_camera_error(monkeypatch):
    if Path("/dev/video0").exists():
        pytest.skip("this machine has a webcam: auto would choose it")
    monkeypatch.delenv(ENV_VAR, raising=False)
    try:
        camera = open_camera("auto", demo_folder=None)
    except CameraError as raised:
        assert str(raised).startswith("no camera found (")
        assert "/dev/video0: no such device" in str(raised) and "cable" in str(raised)
    else:
        assert isinstance(camera, Picamera2Camera), "auto chose a demo without a folder"


def _marked(width: int, height: int) -> np.ndarray:
    """A picture with one white dot near its top-left corner, to follow through turns."""
    image = np.zeros((height, width, 3), np.uint8)
    image[height // 5, width // 7] = 255
    return image


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
@pytest.mark.parametrize("mirror", [False, True])
def test_rotation_and_mirror_keep_the_full_picture_in_register(rotation, mirror):
    from device.camera.base import orient

    source = cv2.GaussianBlur(_marked(1280, 720), (0, 0), 6)  # large enough to survive shrinking
    oriented = orient(fit_to_size(source, (640, 480)), rotation, mirror)
    expected = source[:, ::-1] if mirror else source
    for _ in range(rotation // 90):
        expected = cv2.rotate(expected, cv2.ROTATE_90_CLOCKWISE)
    assert np.array_equal(oriented.full, expected)
    turned = rotation in (90, 270)
    assert oriented.image.shape == ((640, 480, 3) if turned else (480, 640, 3))
    y, x = np.unravel_index(np.argmax(oriented.image[..., 0]), oriented.image.shape[:2])
    frame = Frame(oriented.image, 0.0, 0, oriented.full, oriented.full_offset,
                  oriented.full_scale)
    fx, fy = frame.to_full(np.array([x + 0.5, y + 0.5]))
    ey, ex = np.unravel_index(np.argmax(expected[..., 0]), expected.shape[:2])
    # Within a few pixels of rounding (2 full pixels per image pixel); a wrong offset would be
    # out by the letterbox's 120 full pixels.
    assert abs(fx - (ex + 0.5)) <= 8 and abs(fy - (ey + 0.5)) <= 8


def test_a_camera_mounted_upside_down_gives_upright_frames(tmp_path):
    picture = _marked(640, 480)
    cv2.imwrite(str(tmp_path / "door.png"), picture)
    camera = open_camera(str(tmp_path / "door.png"), demo_folder=None, fps=0, rotation=180)
    with camera:
        image = camera.read().image
    assert np.array_equal(image, cv2.rotate(picture, cv2.ROTATE_180))
    mirrored = open_camera(str(tmp_path / "door.png"), demo_folder=None, fps=0, mirror=True,
                           rotation=90)
    with mirrored:
        image = mirrored.read().image
    assert np.array_equal(image, cv2.rotate(picture[:, ::-1], cv2.ROTATE_90_CLOCKWISE))
