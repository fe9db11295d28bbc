"""What the header check before decoding costs, beside the full decode it protects.

    python bench/bench_upload_checks.py [--repeats 2000] [--no-bomb-decode]
                                        [--json bench/results/upload-checks.json]

For the real photos of tests/data and for the decompression bomb of tests/image_bombs.py
(an 875 KB PNG of 30000x30000 grey pixels), it times ``check_size`` (the header parse and
the pixel limit that ``decode_image`` runs first) and ``cv2.imdecode(IMREAD_COLOR)`` (what
decoding costs once the check has passed; for the bomb, what it would cost without the
check), each as the median of repeats, and measures the peak memory of each: the growth of
the peak resident size (VmHWM) of a fresh child process doing only that, so that
OpenCV's own allocations count too. The bomb's full decode needs about 3 GB of memory and a
few seconds; ``--no-bomb-decode`` leaves it out on a small machine.

Prints a Markdown table and writes JSON with the machine's details. Times are wall-clock:
run it on an otherwise idle machine (the JSON records the load average).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # so that "python bench/bench_upload_checks.py" runs

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from device.errors import ImageTooLarge  # noqa: E402
from device.vision.image_io import MAX_PIXELS, check_size  # noqa: E402
from tests.image_bombs import png_bomb  # noqa: E402

DATA = ROOT / "tests" / "data"
PHOTOS = [DATA / "people" / "Colin_Powell" / "Colin_Powell_0001.jpg", DATA / "couple.jpg",
          DATA / "selfie-many-people.jpg", DATA / "chelsea.png", DATA / "page.png"]
BOMB = "png bomb 30000x30000"


def header_check(data: bytes) -> None:
    try:
        check_size(data, "bench", max_pixels=MAX_PIXELS)
    except ImageTooLarge:
        pass  # the bomb: refused, which is the point


def full_decode(data: bytes) -> None:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None


STEPS = {"header": header_check, "decode": full_decode}


def median_seconds(step, data: bytes, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step(data)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def peak_growth_kib(step: str, source: str) -> int:
    """KiB by which the peak resident size of a fresh process grows doing ``step`` once."""
    result = subprocess.run([sys.executable, __file__, "--child", step, source],
                            capture_output=True, text=True, timeout=600, check=True)
    return int(result.stdout)


def peak_resident_kib() -> int:
    """The process's peak resident size (VmHWM). Not ``ru_maxrss``: Linux keeps that across
    fork and exec, so a child started by a bigger parent would report the parent's peak."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def child(step: str, source: str) -> None:
    data = png_bomb() if source == BOMB else Path(source).read_bytes()
    before = peak_resident_kib()
    STEPS[step](data)
    print(peak_resident_kib() - before)


def measure(name: str, data: bytes, repeats: int, decode: bool) -> dict:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) \
        if name != BOMB else None
    shape = image.shape[:2] if image is not None else (30_000, 30_000)
    row = {"file": name, "bytes": len(data), "width": int(shape[1]), "height": int(shape[0]),
           "header_us": median_seconds(header_check, data, repeats) * 1e6,
           "header_peak_kib": peak_growth_kib("header", name if name == BOMB else
                                              str(DATA / name))}
    if decode:
        decode_repeats = 1 if name == BOMB else max(5, repeats // 100)
        row["decode_ms"] = median_seconds(full_decode, data, decode_repeats) * 1e3
        row["decode_peak_kib"] = peak_growth_kib("decode", name if name == BOMB else
                                                 str(DATA / name))
    return row


def machine_info(load_before: float) -> dict:
    return {"platform": platform.platform(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "opencv": cv2.__version__, "max_pixels": MAX_PIXELS,
            "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]}}


def table(rows: list[dict]) -> str:
    lines = ["| file | pixels | bytes | header check | its peak memory | full decode | "
             "its peak memory |", "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        decode = (f"{row['decode_ms']:.1f} ms", f"{row['decode_peak_kib'] / 1024:.1f} MiB") \
            if "decode_ms" in row else ("not run", "not run")
        lines.append(f"| {row['file']} | {row['width']}x{row['height']} | {row['bytes']:,} | "
                     f"{row['header_us']:.1f} µs | {row['header_peak_kib']} KiB | "
                     f"{decode[0]} | {decode[1]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2000,
                        help="header checks timed per file (decodes: a hundredth, at least 5)")
    parser.add_argument("--no-bomb-decode", action="store_true",
                        help="do not decode the bomb (it needs about 3 GB of memory)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" /
                        "upload-checks.json", help="where to write the results")
    parser.add_argument("--child", nargs=2, metavar=("STEP", "SOURCE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    load_before = os.getloadavg()[0]
    rows = [measure(str(path.relative_to(DATA)), path.read_bytes(), args.repeats, True)
            for path in PHOTOS]
    rows.append(measure(BOMB, png_bomb(), args.repeats, not args.no_bomb_decode))
    print(table(rows))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows, "machine": machine_info(load_before)},
                                    indent=2) + "\n")
    print(f"\nwritten to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
