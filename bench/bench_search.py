"""How long one door decision takes as the gallery grows, against the memory-bandwidth limit.

    python bench/bench_search.py [--sizes 1000 10000 100000 1000000] [--quick] [--dim 128]
                                 [--probes 200] [--json bench/results/search.json]

For each gallery size (random unit vectors, about 5 templates per person) and for float32 and
float16 storage, it times ``Matcher.decide()`` over ``--probes`` probes (half of them near an
enrolled template, half strangers) and compares the median with the physical limit: the
matrix's bytes, all read once per probe, divided by the memory bandwidth measured in the same
run (summing a 512 MiB array, best of five). At 100,000 templates it also times the plain
searches the matcher does not use (BLAS on all cores; numpy's float16 product and cast), to
show why.

Prints a Markdown table and writes JSON with the machine's details. Times are wall-clock, so
run it on an otherwise idle machine (the JSON records the load average). Random vectors are
fine here: the cost of a search does not depend on what the numbers are.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # so that "python bench/bench_search.py" runs from a checkout

from device.gallery.matcher import Matcher  # noqa: E402

FULL_SIZES = [1_000, 10_000, 100_000, 1_000_000]
QUICK_SIZES = [1_000, 10_000, 100_000]
TEMPLATES_PER_PERSON = 5
THRESHOLD, MARGIN = 0.5, 0.05  # the values do not change the cost of a decision
TARGET_TEMPLATES, TARGET_MS, TARGET_RATIO = 100_000, 5.0, 2.0


def measure_bandwidth(megabytes: int = 512, repeats: int = 5) -> float:
    """Read bandwidth in bytes/s: the best time of summing a float32 array much larger than
    any cache, which like a search reads every byte once and writes almost nothing."""
    array = np.ones(megabytes * 2**20 // 4, np.float32)  # ones, not empty: pages are touched
    best = min(_seconds(lambda: np.add.reduce(array)) for _ in range(repeats))
    return array.nbytes / best


def make_gallery(
    rng: np.random.Generator, templates: int, dim: int
) -> tuple[list[str], np.ndarray]:
    """``templates`` random unit vectors owned by about ``templates / 5`` people, grouped as
    the gallery returns them (persons get 1 to about 12 templates, 5 on average)."""
    people = max(1, templates // TEMPLATES_PER_PERSON)
    owners = np.sort(rng.integers(0, people, size=templates))
    person_ids = [f"person-{owner:07d}" for owner in owners]
    matrix = rng.standard_normal((templates, dim), dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return person_ids, matrix


def make_probes(rng: np.random.Generator, matrix: np.ndarray, count: int) -> np.ndarray:
    """Half enrolled faces seen again (a template plus noise, cosine about 0.7), half strangers."""
    near = matrix[rng.integers(0, len(matrix), size=count // 2)]
    near = near + rng.standard_normal(near.shape, dtype=np.float32) / np.sqrt(matrix.shape[1])
    strangers = rng.standard_normal((count - len(near), matrix.shape[1]), dtype=np.float32)
    probes = np.concatenate([near, strangers])
    return (probes / np.linalg.norm(probes, axis=1, keepdims=True)).astype(np.float32)


def time_decide(matcher: Matcher, probes: np.ndarray) -> list[float]:
    """Milliseconds per ``decide()``, one probe at a time as the door calls it."""
    for probe in probes[:5]:  # warm the caches and the BLAS thread pool
        matcher.decide(probe, THRESHOLD, MARGIN)
    return [
        _seconds(lambda probe=probe: matcher.decide(probe, THRESHOLD, MARGIN)) * 1e3
        for probe in probes
    ]


def alternatives(matrix: np.ndarray, probe: np.ndarray, repeats: int = 9) -> dict[str, float]:
    """Median ms per probe of the plain ways the matcher does NOT search, for comparison."""
    half = matrix.astype(np.float16)
    probe16 = probe.astype(np.float16)
    block = np.empty((2048, matrix.shape[1]), np.float32)
    scores = np.empty(len(matrix), np.float32)

    def cast_in_blocks() -> None:
        for start in range(0, len(half), len(block)):
            part = half[start : start + len(block)]
            rows = block[: len(part)]
            np.copyto(rows, part)
            np.einsum("ij,j->i", rows, probe, out=scores[start : start + len(part)])

    return {
        "float32, BLAS np.dot on all cores": _median_ms(
            lambda: np.dot(matrix, probe, out=scores), repeats
        ),
        "float16, numpy matmul (no BLAS)": _median_ms(lambda: half @ probe16, 3),
        "float16, numpy cast to float32 in 2048-row blocks": _median_ms(cast_in_blocks, repeats),
    }


def run(sizes: list[int], dim: int, probe_count: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    bandwidth = measure_bandwidth()
    print(f"memory read bandwidth: {bandwidth / 1e9:.1f} GB/s", file=sys.stderr)
    load_before = _load_average()
    rows, others = [], {}
    for size in sizes:
        person_ids, matrix = make_gallery(rng, size, dim)
        probes = make_probes(rng, matrix, probe_count)
        for dtype in (np.float32, np.float16):
            started = time.perf_counter()
            matcher = Matcher(person_ids, matrix, dtype=dtype)
            build_s = time.perf_counter() - started
            times = time_decide(matcher, probes)
            matrix_bytes = matcher.matrix.nbytes
            median = statistics.median(times)
            limit_ms = matrix_bytes / bandwidth * 1e3
            rows.append(
                {
                    "templates": size,
                    "people": matcher.person_count,
                    "dim": dim,
                    "dtype": np.dtype(dtype).name,
                    "matrix_bytes": matrix_bytes,
                    "matcher_bytes": matcher.nbytes,
                    "build_s": round(build_s, 4),
                    "decide_median_ms": round(median, 4),
                    "decide_p90_ms": round(float(np.percentile(times, 90)), 4),
                    "bandwidth_limit_ms": round(limit_ms, 4),
                    "median_over_limit": round(median / limit_ms, 2),
                }
            )
            print(f"{size:>9,} {rows[-1]['dtype']}: {median:.3f} ms", file=sys.stderr)
            del matcher
        if size == TARGET_TEMPLATES or (not others and size == max(sizes)):
            others = {"templates": size, **alternatives(matrix, probes[0].copy())}
        del matrix
    return {
        "machine": machine_info(bandwidth, load_before),
        "settings": {"dim": dim, "probes": probe_count, "seed": seed},
        "results": rows,
        "alternatives_ms": others,
    }


def machine_info(bandwidth: float, load_before: float | None) -> dict:
    blas = getattr(np, "__config__", None)
    config = getattr(blas, "CONFIG", {}) if blas else {}
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": config.get("Build Dependencies", {}).get("blas", {}).get("name"),
        "thread_env": {
            name: os.environ[name]
            for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
            if name in os.environ
        },
        "read_bandwidth_gb_s": round(bandwidth / 1e9, 2),
        # Other work on the machine slows the run: the 1-minute load average before and after.
        "load_average": [load_before, _load_average()],
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def markdown(report: dict) -> str:
    lines = [
        "| templates | people | dtype | matrix MiB | build s | decide median ms | p90 ms "
        "| bandwidth limit ms | median / limit |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["results"]:
        lines.append(
            f"| {row['templates']:,} | {row['people']:,} | {row['dtype']} "
            f"| {row['matrix_bytes'] / 2**20:.1f} | {row['build_s']:.2f} "
            f"| {row['decide_median_ms']:.3f} | {row['decide_p90_ms']:.3f} "
            f"| {row['bandwidth_limit_ms']:.3f} | {row['median_over_limit']:.2f} |"
        )
    machine = report["machine"]
    lines.append("")
    lines.append(
        f"{machine['cpu']}, {machine['cpu_count']} CPUs, numpy {machine['numpy']} "
        f"({machine['blas']}), read bandwidth {machine['read_bandwidth_gb_s']} GB/s, "
        f"load average {machine['load_average'][0]} -> {machine['load_average'][1]}, "
        f"dim {report['settings']['dim']}, {report['settings']['probes']} probes."
    )
    others = dict(report["alternatives_ms"])
    if others:
        lines.append("")
        lines.append(
            f"Searches the matcher does not use, at {others.pop('templates'):,} templates:"
        )
        lines += [f"- {name}: {ms:.2f} ms per probe" for name, ms in others.items()]
    lines.append("")
    for row in report["results"]:
        if row["templates"] == TARGET_TEMPLATES:
            met = row["decide_median_ms"] <= TARGET_MS and row["median_over_limit"] <= TARGET_RATIO
            lines.append(
                f"- target ({TARGET_TEMPLATES:,} templates in <= {TARGET_MS} ms and <= "
                f"{TARGET_RATIO}x the bandwidth limit), {row['dtype']}: "
                f"{'met' if met else 'NOT met'}"
            )
    return "\n".join(lines)


def write_json(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")  # never leave half a file behind
    partial.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(partial, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", help="numbers of templates")
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES} only")
    parser.add_argument("--dim", type=int, default=128, help="embedding length (SFace: 128)")
    parser.add_argument("--probes", type=int, default=200, help="probes timed per size")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "search.json")
    args = parser.parse_args(argv)
    sizes = args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES)
    report = run(sizes, args.dim, args.probes)
    print(markdown(report))
    write_json(report, args.json)
    print(f"\nwrote {args.json}", file=sys.stderr)


def _seconds(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("model name", "Model")):
                    return line.split(":", 1)[1].strip()
    except OSError:  # not Linux
        pass
    return platform.processor() or "unknown CPU"


def _load_average() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _median_ms(function, repeats: int) -> float:
    function()
    return statistics.median(_seconds(function) for _ in range(repeats)) * 1e3


if __name__ == "__main__":
    main()
