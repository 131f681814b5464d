"""python -m benchmarks ingest: reading and validating a large sensor CSV, beside a plain pandas read.

Protocol. A reproducible ETT-like CSV (`date,HUFL,HULL,MUFL,MULL,LUFL,LULL,OT`: a timestamp every
minute and seven readings with three decimals, about one blank cell in 100,000) is generated once
per size and seed and reused from `--dir`. Two readers are timed on it:

- ours: `forecast.frame.load_frame(CsvSpec(path))`, the read and every check and repair the data
  module runs (timestamps, numbers, missing codes, duplicates, step, gaps) with the `data=csv`
  defaults;
- pandas: `pandas.read_csv(path, engine="pyarrow")`, which parses the same timestamps and numbers
  and checks nothing.

Every measurement runs in its own fresh process (same imports for both), so its peak RSS
(ru_maxrss) is its own; the readers alternate within each repeat and the file is in the page
cache (it was just written or read). Reported: median and best seconds, CPU seconds (user +
system, all threads: steadier than wall time on a shared machine), rows/s, median peak RSS, the
peak above the process's RSS after imports per million rows (flat across sizes = memory linear
in rows) and ours / pandas. Target (issue 6): ours <= 1.2 x pandas' time.

    python -m benchmarks ingest                              # 1M, 3M and 10M rows, 3 repeats (~2 min on 2 cores,
                                                             # plus ~20 s to generate the files the first time)
    python -m benchmarks ingest --rows 1000000 --repeats 5
    python -m benchmarks ingest --dir /data/bench --profile  # also cProfile our reader on the largest file
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.process import run_child, status_mb

COLUMNS = ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")
# per column: level, daily amplitude, slow-drift amplitude, noise (ETTm1-like magnitudes)
SHAPES = (
    (7.0, 2.0, 2.5, 0.3),
    (2.0, 0.6, 0.8, 0.15),
    (4.5, 1.8, 2.0, 0.3),
    (0.8, 0.4, 0.5, 0.1),
    (3.0, 0.7, 0.9, 0.1),
    (0.9, 0.2, 0.3, 0.05),
    (15.0, 4.0, 8.0, 0.2),
)
START, STEP_S, CHUNK, BLANK = np.datetime64("2000-01-01T00:00:00", "s"), 60, 1_000_000, 1e-5
READERS = ("pandas", "ours")


def dataset(rows: int, seed: int, folder: Path) -> Path:
    """The CSV of `rows` rows for `seed` in `folder`, generated (vectorised, in chunks) unless already there."""
    path = folder / f"sensors-{rows}-seed{seed}.csv"
    if path.is_file():
        return path
    import pyarrow as pa
    import pyarrow.csv as pc

    folder.mkdir(parents=True, exist_ok=True)
    rng, partial, started = np.random.default_rng(seed), path.with_suffix(".partial"), time.perf_counter()
    drift = rng.standard_normal((len(COLUMNS), rows // 1440 + 2))  # one slow-drift knot per day and column
    with open(partial, "wb") as sink:
        sink.write(("date," + ",".join(COLUMNS) + "\n").encode())
        for begin in range(0, rows, CHUNK):
            step = np.arange(begin, min(rows, begin + CHUNK))
            day = 2 * np.pi * step / 1440
            columns = {"date": pa.array(START + step * STEP_S)}
            for k, (name, (level, daily, slow, noise)) in enumerate(zip(COLUMNS, SHAPES)):
                values = level + daily * np.sin(day + k) + slow * np.interp(step / 1440, np.arange(drift.shape[1]), drift[k])
                values = np.round(values + noise * rng.standard_normal(step.size), 3)
                values[rng.random(step.size) < BLANK] = np.nan
                columns[name] = pa.array(values, from_pandas=True)  # NaN -> null -> blank cell
            pc.write_csv(pa.table(columns), sink, pc.WriteOptions(include_header=False, batch_size=65536))
    partial.rename(path)
    print(f"generated {path} ({path.stat().st_size / 1e6:,.0f} MB) in {time.perf_counter() - started:.1f} s", flush=True)
    return path


def child(reader: str, path: str) -> None:
    """Runs in a fresh process: one read, printed as JSON (seconds, rows, RSS after imports, peak RSS)."""
    import resource

    import pandas as pd

    from forecast.frame import CsvSpec, load_frame

    base, cpu = status_mb("VmRSS"), time.process_time()
    start = time.perf_counter()
    rows = len(load_frame(CsvSpec(path=path))[0]) if reader == "ours" else len(pd.read_csv(path, engine="pyarrow"))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"seconds": seconds, "cpu_s": cpu, "rows_out": rows, "base_mb": base, "peak_mb": peak}))


def measure(reader: str, path: Path) -> dict:
    return run_child("benchmarks.ingest", [reader, str(path)], f"{reader} on {path}")


def profile(path: Path, top: int = 25) -> None:
    """cProfile of our reader in this process, the `top` functions by cumulative time."""
    import cProfile
    import pstats

    from forecast.frame import CsvSpec, load_frame

    profiler = cProfile.Profile()
    profiler.runcall(load_frame, CsvSpec(path=str(path)))
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(top)


def compare(size: int, path: Path, repeats: int) -> list[dict]:
    """Rows for pandas and ours on one file: medians of `repeats` fresh-process reads, alternating who goes first."""
    runs = {reader: [] for reader in READERS}
    for repeat in range(repeats):
        for reader in READERS if repeat % 2 == 0 else READERS[::-1]:
            runs[reader].append(measure(reader, path))
    rows = []
    for reader, found in runs.items():
        median = {key: statistics.median(r[key] for r in found) for key in ("seconds", "cpu_s", "peak_mb", "base_mb")}
        rows.append(
            {
                "rows": size,
                "file_mb": path.stat().st_size / 1e6,
                "reader": reader,
                "seconds": median["seconds"],
                "best_s": min(r["seconds"] for r in found),
                "cpu_s": median["cpu_s"],
                "rows_per_s": size / median["seconds"],
                "peak_rss_mb": median["peak_mb"],
                "base_rss_mb": median["base_mb"],
                "peak_above_base_mb_per_mrow": (median["peak_mb"] - median["base_mb"]) / (size / 1e6),
                "rows_out": found[0]["rows_out"],
                "all_seconds": [r["seconds"] for r in found],
            }
        )
    pandas, ours = rows
    for row in rows:
        row["vs_pandas"], row["cpu_vs_pandas"] = row["seconds"] / pandas["seconds"], row["cpu_s"] / pandas["cpu_s"]
    print(
        f"{size:,} rows: ours {ours['seconds']:.2f} s, pandas {pandas['seconds']:.2f} s ({ours['vs_pandas']:.2f}x; "
        f"CPU {ours['cpu_vs_pandas']:.2f}x)",
        flush=True,
    )
    return rows


def table(rows: list[dict], repeats: int, load: float) -> str:
    from benchmarks.sweep import machine

    ratio = rows[-1]["vs_pandas"]
    return "\n".join(
        [
            (
                f"Reading a generated ETT-like CSV (timestamp + 7 readings per row, one per minute; {machine()}; load average "
                f"{load:.1f} at the start): our `load_frame` (read + validation, `data=csv` defaults) against "
                f'`pandas.read_csv(engine="pyarrow")`. Each read in a fresh process, median of {repeats} (best beside it); CPU s '
                "is the process's user + system time during the read (all threads); peak RSS is its ru_maxrss, 'above imports' "
                "subtracts its RSS after importing pandas and forecast.frame."
            ),
            "",
            "| rows | file MB | reader | s | best s | CPU s | rows / s | peak RSS MB | above imports, MB per M rows "
            "| time / pandas | CPU / pandas |",
            "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            *(
                f"| {r['rows']:,} | {r['file_mb']:,.0f} | {r['reader']} | {r['seconds']:.2f} | {r['best_s']:.2f} | {r['cpu_s']:.2f} "
                f"| {r['rows_per_s'] / 1e6:.2f} M | {r['peak_rss_mb']:,.0f} | {r['peak_above_base_mb_per_mrow']:.0f} "
                f"| {r['vs_pandas']:.2f} | {r['cpu_vs_pandas']:.2f} |"
                for r in rows
            ),
            "",
            f"Target ours <= 1.2 x pandas at {rows[-1]['rows']:,} rows: {ratio:.2f}x, {'met' if ratio <= 1.2 else 'NOT met'}.",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000], help="file sizes in rows")
    parser.add_argument("--repeats", type=int, default=3, help="reads per reader and size (median reported)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "forecast-bench", help="where the CSVs are cached")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of our reader on the largest file")
    parser.add_argument("--child", nargs=2, metavar=("READER", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(*args.child)
    # imported here, not in the children, whose memory mlflow would weigh on
    from benchmarks.sweep import machine, write

    command = shlex.join(["python", "-m", "benchmarks", "ingest", *(argv if argv is not None else sys.argv[2:])])
    load, rows = os.getloadavg()[0], []
    for size in sorted(args.rows):
        rows += compare(size, dataset(size, args.seed, args.dir), args.repeats)
    protocol = (
        f"fresh process per read, pandas and ours alternating, warm page cache; median of {args.repeats} reads; "
        f"load average {load:.1f} at the start; data: sensors-<rows>-seed{args.seed}.csv from benchmarks/ingest.py"
    )
    for row in rows:
        row |= {"machine": machine(), "command": command, "protocol": protocol}
    write("ingest", rows, table(rows, args.repeats, load))
    if args.profile:
        profile(dataset(max(args.rows), args.seed, args.dir))


if __name__ == "__main__":
    main()
