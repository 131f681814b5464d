"""python -m benchmarks windows: memory of the data module on a long series, to show that windows stay views.

Protocol. The data module (`forecast.datamodule.SensorDataModule`, L = 720, H = 96, the `data=csv`
defaults, batch 256) is built on the generated ETT-like CSV of `python -m benchmarks ingest` (same
file, same cache) in a fresh process, then iterated: `--batches` shuffled training batches and
`--batches` validation and test batches each. Memory is the kernel's own high-water mark of the
process (VmHWM in /proc/self/status), reset between phases by writing 5 to /proc/self/clear_refs,
so each phase's peak is exact and its own:

- load: reading and validating the CSV (`load_frame`, called by the data module; the benchmark
  wraps that call to mark where ingestion ends, then returns memory that was freed but kept by
  the allocators - glibc's malloc_trim, arrow's pool - so the next phase starts from live memory);
- setup: the rest of the data module's constructor (scaler, the float32 series, window origins);
- iteration: the batches.

The series' own array is rows x channels x 4 bytes (float32); materialised windows would take
windows x (L + H) x channels x 4 bytes. Windows that are views add memory in proportion to the
series (the float32 series, window origins) during setup and one batch at a time during iteration;
the training loader's shuffling sampler is measured on its own too (it holds a permutation of the
training windows). Target (issue 6): the peak increase over the RSS after loading well under twice
the series' array.

    python -m benchmarks windows                     # 10M rows (the ingest benchmark's file), ~1 min on 2 cores
    python -m benchmarks windows --rows 1000000 --batches 200
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.process import run_child, status_mb

MB = 2**20


def reset_peak() -> None:
    """Start a new high-water mark at the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def release_freed() -> None:
    """Give memory that is freed but still held by the allocators back to the system."""
    import pyarrow as pa

    gc.collect()
    pa.default_memory_pool().release_unused()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def child(path: str, lookback: int, horizon: int, batches: int) -> None:
    """Runs in a fresh process: build the data module, iterate, print the phases' memory as JSON."""
    import itertools

    from forecast import datamodule

    marks = {"imports_mb": status_mb("VmRSS")}
    load_frame = datamodule.load_frame

    def marked_load(spec):
        out = load_frame(spec)
        marks["load_peak_mb"], marks["after_load_mb"] = status_mb("VmHWM"), status_mb("VmRSS")
        release_freed()
        marks["after_load_trimmed_mb"] = status_mb("VmRSS")
        reset_peak()
        return out

    datamodule.load_frame = marked_load
    reset_peak()
    start = time.perf_counter()
    dm = datamodule.SensorDataModule(path, name="bench", lookback=lookback, horizon=horizon, batch_size=256)
    marks["build_s"] = time.perf_counter() - start
    marks["setup_peak_mb"], marks["after_setup_mb"] = status_mb("VmHWM"), status_mb("VmRSS")
    reset_peak()
    next(iter(dm.train_dataloader().batch_sampler))  # the shuffling sampler alone: one batch of indices
    marks["sampler_peak_mb"] = status_mb("VmHWM")
    start, seen, peaks = time.perf_counter(), 0, {}
    for name, loader in (("train", dm.train_dataloader()), ("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        release_freed()
        reset_peak()
        for x, _ in itertools.islice(loader, batches):
            seen += len(x)
        peaks[name] = status_mb("VmHWM")
    marks["iterate_s"], marks["windows_iterated"], marks["loader_peak_mb"] = time.perf_counter() - start, seen, peaks
    marks["iterate_peak_mb"], marks["after_iterate_mb"] = max(peaks.values()), status_mb("VmRSS")
    marks |= {
        "rows": len(dm.frame),
        "channels": dm.n_inputs,
        "windows": sum(dm.windows.values()),
        "split_windows": dm.windows,
        "series_dtype": str(dm.datasets["train"].series.dtype),
    }
    print(json.dumps(marks))


def measure(path: Path, lookback: int, horizon: int, batches: int) -> dict:
    return run_child("benchmarks.windows", [str(path), str(lookback), str(horizon), str(batches)], f"the data module on {path}")


def summary(m: dict, lookback: int, horizon: int) -> dict:
    """Sizes (MiB) to compare the phases with: the series' array and the windows if they were materialised."""
    series = m["rows"] * m["channels"] * 4 / MB
    return {
        "series_mb": series,
        "materialised_mb": m["windows"] * (lookback + horizon) * m["channels"] * 4 / MB,
        "setup_peak_increase_mb": m["setup_peak_mb"] - m["after_load_trimmed_mb"],
        "setup_retained_mb": m["after_setup_mb"] - m["after_load_trimmed_mb"],
        "iterate_peak_increase_mb": m["iterate_peak_mb"] - m["after_setup_mb"],
        "sampler_peak_increase_mb": m["sampler_peak_mb"] - m["after_setup_mb"],
        **{f"{name}_loader_peak_increase_mb": peak - m["after_setup_mb"] for name, peak in m["loader_peak_mb"].items()},
        "peak_increase_mb": max(m["setup_peak_mb"], m["iterate_peak_mb"]) - m["after_load_trimmed_mb"],
    }


def table(m: dict, s: dict, lookback: int, horizon: int, batches: int, load: float) -> str:
    from benchmarks.sweep import machine

    ratio = s["peak_increase_mb"] / s["series_mb"]

    def row(what: str, mb: float, ratio: bool = True) -> str:
        times = f"{mb / s['series_mb']:.2f}" if ratio else ""
        return f"| {what} | {mb:,.0f} | {times} |"

    return "\n".join(
        [
            (
                f"Data module memory on the generated ETT-like series ({m['rows']:,} rows x {m['channels']} channels, L = {lookback}, "
                f"H = {horizon}, {m['windows']:,} windows; {machine()}; load average {load:.1f} at the start). Peaks are the "
                "kernel's high-water mark (VmHWM) of a fresh process, reset after each phase; increases are over the RSS after "
                f"ingestion, with freed memory returned. Iteration: {batches} training batches of 256 (shuffled), {batches} "
                f"validation and {batches} test batches of 512 ({m['windows_iterated']:,} windows in {m['iterate_s']:.1f} s)."
            ),
            "",
            "| memory | MiB | x series array |",
            "|---|---:|---:|",
            row(f"the series' array (rows x channels x 4 bytes, {m['series_dtype']})", s["series_mb"]),
            row("materialised windows would take (windows x (L + H) x channels x 4 bytes)", s["materialised_mb"]),
            row("RSS after imports", m["imports_mb"], ratio=False),
            row("peak while loading the CSV (load_frame)", m["load_peak_mb"], ratio=False),
            row("RSS after loading (freed memory returned)", m["after_load_trimmed_mb"], ratio=False),
            row("setup: peak increase (scaler, float32 series, window origins)", s["setup_peak_increase_mb"]),
            row("setup: retained increase", s["setup_retained_mb"]),
            row("iteration: peak increase over the RSS after setup", s["iterate_peak_increase_mb"]),
            row("- training loader (shuffled)", s["train_loader_peak_increase_mb"]),
            row("- its shuffling sampler alone (a permutation of the training windows)", s["sampler_peak_increase_mb"]),
            row("- validation loader", s["val_loader_peak_increase_mb"]),
            row("- test loader", s["test_loader_peak_increase_mb"]),
            row("setup + iteration: peak increase over the RSS after loading", s["peak_increase_mb"]),
            "",
            (
                f"Windows are views: the validation and test loaders add {s['val_loader_peak_increase_mb']:,.0f} and "
                f"{s['test_loader_peak_increase_mb']:,.0f} MiB (a batch at a time), the training loader "
                f"{s['train_loader_peak_increase_mb']:,.0f} MiB, its sampler's permutation alone "
                f"{s['sampler_peak_increase_mb']:,.0f} MiB; materialising all {m['windows']:,} windows would take "
                f"{s['materialised_mb'] / 1024:,.0f} GiB ({s['materialised_mb'] / s['series_mb']:,.0f}x the series). Setup keeps "
                f"{s['setup_retained_mb'] / s['series_mb']:.2f}x the series' array (the float32 series and the window origins) "
                f"and peaks at {s['setup_peak_increase_mb'] / s['series_mb']:.2f}x."
            ),
            "",
            f"Target (issue 6), peak increase well under 2x the series' array: {ratio:.2f}x, {'met' if ratio < 2 else 'NOT met'}.",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks windows", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows of the generated series")
    parser.add_argument("--lookback", type=int, default=720)
    parser.add_argument("--horizon", type=int, default=96)
    parser.add_argument("--batches", type=int, default=500, help="batches iterated from each of train, val and test")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "forecast-bench", help="where the CSVs are cached")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child[0], *map(int, args.child[1:]))
    import os

    from benchmarks.ingest import dataset
    from benchmarks.sweep import machine, write

    command = shlex.join(["python", "-m", "benchmarks", "windows", *(argv if argv is not None else sys.argv[2:])])
    load = os.getloadavg()[0]
    m = measure(dataset(args.rows, args.seed, args.dir), args.lookback, args.horizon, args.batches)
    s = summary(m, args.lookback, args.horizon)
    protocol = (
        "fresh process; VmHWM reset via /proc/self/clear_refs between phases (load_frame, rest of the data module's "
        "constructor, iteration); increases over the RSS after load_frame with freed memory returned (malloc_trim, "
        f"arrow pool); {args.batches} batches from each loader; load average {load:.1f} at the start"
    )
    row = {
        **m,
        **s,
        "lookback": args.lookback,
        "horizon": args.horizon,
        "batches": args.batches,
        "machine": machine(),
        "command": command,
        "protocol": protocol,
    }
    write("windows", [row], table(m, s, args.lookback, args.horizon, args.batches, load))


if __name__ == "__main__":
    main()
