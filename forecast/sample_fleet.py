"""Deterministic generator of a synthetic fleet of meters: `python -m forecast.sample fleet`.

    python -m forecast.sample fleet --devices 200 --days 365 --freq 1h --output meters.csv
    python -m forecast.sample fleet --devices 50 --days 90 --folder meters/     # one CSV per device
    python -m forecast.sample fleet --devices 200 --days 365 --sites 10         # with a static `site` column

Long layout, one row per reading, the rows of a device together and in time order:

    timestamp, device, power_kw, temperature_c[, site]

(`--folder`: one file `<device>.csv` per device with the same columns but `device`.) Every
device starts 2025-01-01 00:00 (unless installed later) and reads every `--freq`. The signals:

- temperature_c: the weather of the device's site (a seasonal swing of +-9 C around 10 C, a daily
  cycle peaking at 15:00, fronts as an AR(1) process shared by the site's devices), plus the
  device's own offset and noise; one decimal;
- power_kw: a level per device (log-normal, median ~4.5 kW) times a daily profile that mixes an
  office (weekday daytime), a household (morning and evening peaks) and a plant (flat, two shifts)
  with weights of its own, a weekend factor, heating below 15 C and cooling above 22 C at the
  device's own sensitivities, a drift of a few percent a year and AR(1) noise; three decimals.

The faults a real fleet has, placed by the seeded generator:

- late installs: a quarter of the devices start between 5% and 60% into the span;
- outages: 2 to 6 per device, each 6-48 hours long, with the rows absent;
- stuck meters: one device in five has one stretch of 6-72 hours where power_kw repeats a value;
- empty cells: about one reading in 10,000.

The fleet is generated in blocks of `BLOCK` devices, each from its own seeded generator, and
written with pyarrow's CSV writer: the same arguments give byte-for-byte the same file, memory
stays that of one block, and 10,000 devices x 365 days of hourly readings (87.6 M rows, ~4 GB)
take a few minutes.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

START = np.datetime64("2025-01-01T00:00:00", "s")
READINGS = ("power_kw", "temperature_c")
BLOCK = 128  # devices per generator block: part of what makes the output deterministic
DEVICES_PER_SITE = 40
LATE_SHARE, STUCK_SHARE, BLANK_RATE = 0.25, 0.2, 1e-4


@dataclass
class Fleet:
    """What `generate` wrote, for the summary line."""

    devices: int
    rows: int
    late: int
    outages: int
    stuck: int
    blanks: int
    seconds: float


def steps_per_hour(freq: str) -> float:
    """Readings per hour at `freq` ("1h", "15min"); ValueError unless it divides a day into whole steps."""
    step = pd.Timedelta(freq)
    if step <= pd.Timedelta(0) or pd.Timedelta("1D") % step != pd.Timedelta(0) or step % pd.Timedelta("1s") != pd.Timedelta(0):
        raise ValueError(f"--freq {freq} must divide a day into whole steps (e.g. 1h, 30min, 15min)")
    return pd.Timedelta("1h") / step


def ar1(rng: np.random.Generator, shape: tuple[int, int], phi: float, sd: float) -> np.ndarray:
    """AR(1) noise along axis 1 of `shape` [series, steps], stationary standard deviation `sd`."""
    eps = rng.normal(0.0, sd * np.sqrt(1 - phi**2), (shape[1], shape[0]))  # [n, series]: time-major for the recurrence
    eps[0] = rng.normal(0.0, sd, shape[0])
    for t in range(1, shape[1]):
        eps[t] += phi * eps[t - 1]
    return eps.T  # [series, n]


def weather(seed: int, sites: int, n: int, per_hour: float) -> np.ndarray:
    """Outdoor temperature of every site [sites, n]: season, daily cycle, fronts."""
    rng = np.random.default_rng([seed, 0])
    hours = np.arange(n) / per_hour
    doy = hours / 24
    season = 10 - 9 * np.cos(2 * np.pi * (doy - 20) / 365)  # [n]
    daily = 4 * np.cos(2 * np.pi * (hours % 24 - 15) / 24)  # [n]
    climate = rng.normal(0, 4, (sites, 1))  # [sites, 1]
    return climate + season + daily + ar1(rng, (sites, n), 0.97 ** (1 / per_hour), 2.5)


def profiles(hours: np.ndarray) -> np.ndarray:
    """Daily load shapes [3, n] in 0..1: office, household, plant."""
    h = hours % 24
    weekday = (hours // 24 + 2) % 7 < 5  # 2025-01-01 is a Wednesday (day 2 of Monday-based weeks)
    office = np.clip(np.minimum(h - 7, 19 - h) / 2, 0, 1) * weekday
    household = 0.25 + 0.5 * np.exp(-(((h - 7.5) / 1.2) ** 2)) + 0.75 * np.exp(-(((h - 19.5) / 2) ** 2))
    plant = np.where((h >= 6) & (h < 22), 0.9, 0.4) * np.where(weekday, 1.0, 0.6)
    return np.stack([office, household, plant])


def block(seed: int, first: int, count: int, n: int, per_hour: float, sites: np.ndarray, temps: np.ndarray) -> dict:
    """Readings [count, n] of devices first .. first+count-1, with their faults: a dict of arrays."""
    rng = np.random.default_rng([seed, 1, first])
    hours = np.arange(n) / per_hour
    temp = temps[sites] + rng.normal(0, 1, (count, 1)) + rng.normal(0, 0.3, (count, n))  # [count, n]
    weights = rng.dirichlet([0.6, 0.6, 0.6], count)  # [count, 3]
    shape = weights @ profiles(hours)  # [count, n]
    weekend = (hours // 24 + 2) % 7 >= 5
    shape *= np.where(weekend, rng.uniform(0.6, 1.0, (count, 1)), 1.0)
    level = rng.lognormal(1.5, 0.6, (count, 1))  # [count, 1] kW
    heat = rng.uniform(0, 0.06, (count, 1)) * np.clip(15 - temp, 0, None)  # per kW of level
    cool = rng.uniform(0, 0.05, (count, 1)) * np.clip(temp - 22, 0, None)
    drift = 1 + rng.normal(0, 0.04, (count, 1)) * hours / (24 * 365)
    noise = 1 + ar1(rng, (count, n), 0.8 ** (1 / per_hour), 0.08) + rng.normal(0, 0.03, (count, n))
    power = np.clip(level * drift * (0.35 + shape + heat + cool) * noise, 0, None)
    power, temp = np.round(power, 3), np.round(temp, 1) + 0.0  # + 0.0 turns -0.0 into 0.0

    keep = np.ones((count, n), dtype=bool)
    late = rng.random(count) < LATE_SHARE
    installed = np.where(late, (rng.uniform(0.05, 0.6, count) * n).astype(int), 0)
    keep[np.arange(n) < installed[:, None]] = False
    outages = rng.integers(2, 7, count)
    stuck = rng.random(count) < STUCK_SHARE
    span = lambda low_h, high_h: int(round(rng.uniform(low_h, high_h) * per_hour))  # noqa: E731  a duration in steps
    for d in range(count):
        for _ in range(outages[d]):
            length = span(6, 48)
            start = int(rng.integers(installed[d], max(installed[d] + 1, n - length)))
            keep[d, start : start + length] = False
        if stuck[d]:
            length = span(6, 72)
            start = int(rng.integers(installed[d], max(installed[d] + 1, n - length)))
            power[d, start : start + length] = power[d, start]
    blank = rng.random((2, count, n)) < BLANK_RATE
    power[blank[0]], temp[blank[1]] = np.nan, np.nan
    return {
        "keep": keep,
        "power_kw": power,
        "temperature_c": temp,
        "late": int(late.sum()),
        "outages": int(outages.sum()),
        "stuck": int(stuck.sum()),
        "blanks": int((blank & keep).sum()),
    }


def names(prefix: str, count: int) -> list[str]:
    width = len(str(max(count - 1, 0)))
    return [f"{prefix}{i:0{width}d}" for i in range(count)]


def generate(
    devices: int, days: int, freq: str = "1h", seed: int = 0, output: Path | None = None, folder: Path | None = None, sites: int = 0
) -> Fleet:
    """Write the fleet to `output` (one long CSV) or `folder` (one CSV per device); what was written.

    sites: 0 for no `site` column, else the number of sites the devices are spread over (a static
    attribute: constant per device); the weather is shared by the devices of a site either way.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as csv

    started = time.perf_counter()
    per_hour = steps_per_hour(freq)
    n = int(round(days * 24 * per_hour))
    step = np.timedelta64(int(pd.Timedelta(freq).total_seconds()), "s")
    weather_sites = sites or -(-devices // DEVICES_PER_SITE)  # devices of a named site share its weather
    temps = weather(seed, weather_sites, n, per_hour)  # [sites, n]
    site_of = np.random.default_rng([seed, 2]).integers(0, weather_sites, devices)  # [devices]
    device_names, site_names = pa.array(names("m", devices)), pa.array(names("site-", sites or 1))
    stamps = START + np.arange(n) * step  # [n]
    options = csv.WriteOptions(include_header=False, batch_size=1 << 16, quoting_style="none")  # ids hold no separators
    columns = ["timestamp", *([] if folder else ["device"]), *READINGS, *(["site"] if sites else [])]
    header = (",".join(columns) + "\n").encode()
    totals = dict(rows=0, late=0, outages=0, stuck=0, blanks=0)
    target = None
    if folder is None:
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(output.name + ".partial")
        target = open(partial, "wb")
        target.write(header)
    else:
        folder.mkdir(parents=True, exist_ok=True)
    try:
        for first in range(0, devices, BLOCK):
            count = min(BLOCK, devices - first)
            b = block(seed, first, count, n, per_hour, site_of[first : first + count], temps)
            keep = b["keep"]
            per_device = keep.sum(axis=1)  # [count]
            device = np.repeat(np.arange(first, first + count), per_device)  # [rows]
            table = {
                "timestamp": pa.array(np.broadcast_to(stamps, keep.shape)[keep]),
                "device": pc.take(device_names, pa.array(device)),
                **{name: pa.array(b[name][keep], from_pandas=True) for name in READINGS},  # NaN -> empty cell
            }
            if sites:
                table["site"] = pc.take(site_names, pa.array(site_of[device]))
            table = pa.table({c: table[c] for c in columns} if folder is None else {c: table[c] for c in ["device", *columns]})
            if folder is None:
                csv.write_csv(table, target, options)
            else:
                ends = np.cumsum(per_device)
                for d in range(count):
                    part = table.slice(ends[d] - per_device[d], per_device[d]).drop_columns(["device"])
                    with open(folder / f"{device_names[first + d].as_py()}.csv", "wb") as sink:
                        sink.write(header)
                        csv.write_csv(part, sink, options)
            totals["rows"] += int(per_device.sum())
            for key in ("late", "outages", "stuck", "blanks"):
                totals[key] += b[key]
    finally:
        if target is not None:
            target.close()
    if folder is None:
        partial.rename(output)
    return Fleet(devices, seconds=time.perf_counter() - started, **totals)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m forecast.sample fleet", description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, required=True, help="number of devices (meters)")
    parser.add_argument("--days", type=int, required=True, help="days of readings, from 2025-01-01")
    parser.add_argument("--freq", default="1h", help="step between readings (1h, 30min, 15min)")
    parser.add_argument("--seed", type=int, default=0, help="seed: the same arguments give the same bytes")
    parser.add_argument("--sites", type=int, default=0, help="add a static `site` column over this many sites (0: none)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--output", type=Path, help="the long CSV to write (default meters.csv)")
    where.add_argument("--folder", type=Path, help="write one CSV per device into this folder instead")
    args = parser.parse_args(argv)
    if args.devices < 1 or args.days < 1 or args.sites < 0:
        parser.error("--devices and --days must be at least 1, --sites at least 0")
    try:
        steps_per_hour(args.freq)
    except ValueError as e:
        parser.error(str(e))
    output = None if args.folder else (args.output or Path("meters.csv"))
    f = generate(args.devices, args.days, args.freq, args.seed, output, args.folder, args.sites)
    print(
        f"wrote {f.rows:,} rows of {f.devices:,} devices ({len(READINGS)} readings each, every {args.freq} over {args.days} days) "
        f"to {output or args.folder} in {f.seconds:.1f} s: {f.late:,} installed late, {f.outages:,} outages, "
        f"{f.stuck:,} stuck meters, {f.blanks:,} empty cells"
    )
