"""Deterministic generator of the embedded sample dataset ``data/sensors.csv``.

It simulates the sensor export of a small office building: one row every 30 minutes for
``--days`` days starting Monday 2025-01-06 00:00, with the columns

    timestamp, outdoor_temp_c, indoor_temp_c, humidity_pct, co2_ppm, power_kw

Occupancy follows office hours (weekdays ~08:00-18:00, almost nobody at weekends); outdoor
temperature has a daily cycle and warms from January towards summer; power grows slowly and
depends on occupancy and heating demand; indoor temperature follows the heating schedule with a
lag; CO2 builds up with occupancy and decays afterwards; humidity moves against indoor
temperature. Noise is AR(1) plus white noise. The faults a real export has are built in, placed
by the seeded generator: empty cells (~0.5%), the missing-value code -9999 (~0.1%), a ~5 hour
outage with the rows absent, one duplicated timestamp (second copy with slightly different
values) and a ~36 hour stretch where ``humidity_pct`` is stuck at one value.

Regenerate (byte-for-byte identical output for the same arguments):

    python -m forecast.sample --out data/sensors.csv --seed 0 --days 180

A synthetic fleet of meters (long layout, late installs, outages, stuck meters) comes from
`python -m forecast.sample fleet --devices N --days D --freq 1h` (forecast/sample_fleet.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from forecast import sample_fleet
from forecast.errors import InputError

START = "2025-01-06 00:00:00"
STEPS_PER_DAY = 48
SENSORS = ["outdoor_temp_c", "indoor_temp_c", "humidity_pct", "co2_ppm", "power_kw"]
MISSING_CODE = "-9999"


def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    """AR(1) series with stationary standard deviation ``sd``."""
    eps = rng.normal(0.0, sd * np.sqrt(1 - phi**2), n)
    x = np.empty(n)
    x[0] = rng.normal(0.0, sd)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + eps[i]
    return x


def _lag(target: np.ndarray, rate: float) -> np.ndarray:
    """First-order response: each step closes ``rate`` of the gap to ``target``."""
    x = np.empty(len(target))
    x[0] = target[0]
    for i in range(1, len(target)):
        x[i] = x[i - 1] + rate * (target[i] - x[i - 1])
    return x


def _signals(rng: np.random.Generator, ts: pd.DatetimeIndex) -> dict[str, np.ndarray]:
    n = len(ts)
    hour = ts.hour.to_numpy() + ts.minute.to_numpy() / 60
    weekday = ts.day_of_week.to_numpy() < 5
    day = (ts - ts[0]).days.to_numpy()
    # occupancy 0..1: ramps 07-09 up and 17-19 down, lunch dip, day-to-day variation
    shape = np.clip(np.minimum(hour - 7, 19 - hour) / 2, 0, 1) - 0.15 * np.exp(-((hour - 12.5) ** 2))
    level = np.repeat(np.clip(rng.normal(1.0, 0.12, day[-1] + 1), 0.6, 1.3), STEPS_PER_DAY)[:n]
    occ = np.where(weekday, shape * level, 0.04 * shape)
    # outdoor: seasonal warming (day of year), daily cycle peaking at 15:00, weather fronts
    doy = ts.day_of_year.to_numpy()
    outdoor = (
        9
        - 8 * np.cos(2 * np.pi * (doy - 20) / 365)
        + 3.5 * np.cos(2 * np.pi * (hour - 15) / 24)
        + _ar1(rng, n, 0.985, 2.5)
        + rng.normal(0, 0.3, n)
    )
    # heating: weekday schedule 06-19 at 21.5 C, setback 17 C otherwise
    schedule = weekday & (hour >= 6) & (hour < 19)
    target = np.where(schedule, 21.5, 17.0) + 0.12 * (outdoor - 10) + 1.2 * occ
    indoor = _lag(target, 0.12) + _ar1(rng, n, 0.9, 0.3) + rng.normal(0, 0.2, n)
    co2 = 420 + _lag(3 * 250 * occ, 0.25) + _ar1(rng, n, 0.8, 15) + rng.normal(0, 8, n)
    humidity = 46 - 1.8 * (indoor - 20) + 7 * occ + 0.25 * outdoor + _ar1(rng, n, 0.95, 2.5) + rng.normal(0, 0.6, n)
    heating = np.clip(16 - outdoor, 0, None) * np.where(schedule, 1.4, 0.6)
    base = 14 * (1 + 0.05 * np.arange(n) / n)
    power = base + 30 * occ + heating + _ar1(rng, n, 0.85, 2.0) + rng.normal(0, 1.0, n)
    return {
        "outdoor_temp_c": outdoor,
        "indoor_temp_c": indoor,
        "humidity_pct": np.clip(humidity, 15, 85),
        "co2_ppm": co2,
        "power_kw": np.clip(power, 0, None),
    }


def generate(days: int = 180, seed: int = 0) -> pd.DataFrame:
    """The sample export as written to CSV: every cell a string, faults included."""
    rng = np.random.default_rng(seed)
    n = days * STEPS_PER_DAY
    ts = pd.date_range(START, periods=n, freq="30min")
    signals = _signals(rng, ts)
    values = np.column_stack([signals[c] for c in SENSORS])
    values = np.round(values, 1) + 0.0  # + 0.0 turns -0.0 into 0.0
    # stuck humidity sensor for 36 hours, within the first 60% of the span
    stuck = int(rng.integers(int(0.15 * n), int(0.35 * n)))
    stuck_rows = slice(stuck, stuck + 72)
    values[stuck_rows, SENSORS.index("humidity_pct")] = values[stuck, SENSORS.index("humidity_pct")]
    cells = np.array([[f"{v:.1f}" for v in row] for row in values], dtype=object)
    # scattered missing cells: ~0.5% empty, ~0.1% holding the missing-value code
    u = rng.random(cells.shape)
    u[stuck_rows, SENSORS.index("humidity_pct")] = 1.0  # keep the stuck stretch whole
    cells[u < 0.005] = ""
    cells[(u >= 0.005) & (u < 0.006)] = MISSING_CODE
    frame = pd.DataFrame(cells, columns=SENSORS)
    frame.insert(0, "timestamp", ts.strftime("%Y-%m-%d %H:%M:%S"))
    # one duplicated timestamp: the row repeated right after, values nudged a little
    dup = int(rng.integers(int(0.65 * n), int(0.9 * n)))
    copy = frame.iloc[[dup]].copy()
    nudge = rng.choice([-0.3, -0.2, -0.1, 0.1, 0.2, 0.3], len(SENSORS))
    for col, d in zip(SENSORS, nudge):
        v = copy.iloc[0][col]
        if v not in ("", MISSING_CODE):
            copy.loc[copy.index[0], col] = f"{float(v) + d + 0.0:.1f}"
    # outage of 5 hours in the middle: rows absent altogether
    gap = int(rng.integers(int(0.4 * n), int(0.6 * n)))
    keep = np.ones(n, dtype=bool)
    keep[gap : gap + 10] = False
    parts = [frame.iloc[: dup + 1], copy, frame.iloc[dup + 1 :]]
    frame = pd.concat(parts)[np.concatenate([keep[: dup + 1], [True], keep[dup + 1 :]])]
    return frame.reset_index(drop=True)


def write(frame: pd.DataFrame, out: Path) -> None:
    """Write the frame with fixed formatting, so the bytes depend only on the arguments."""
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False, lineterminator="\n")


def default_path() -> str:
    """The sample the default run trains on: `data/sensors.csv` of this checkout (install with `pip install -e .`)."""
    shipped = Path(__file__).resolve().parents[1] / "data" / "sensors.csv"
    if not shipped.is_file():
        raise InputError(f"the sample data {shipped} is missing; regenerate it with python -m forecast.sample --out {shipped}")
    return str(shipped)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["fleet"]:
        return sample_fleet.main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m forecast.sample",
        description=__doc__.splitlines()[0],
        epilog="python -m forecast.sample fleet --help: a synthetic fleet of meters instead",
    )
    parser.add_argument("--out", type=Path, default=Path("data/sensors.csv"), help="CSV file to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of numpy's default_rng")
    parser.add_argument("--days", type=int, default=180, help="number of days, from 2025-01-06")
    args = parser.parse_args(argv)
    if args.days < 7:
        parser.error("--days must be at least 7")
    frame = generate(args.days, args.seed)
    write(frame, args.out)
    print(f"wrote {len(frame)} rows to {args.out}")


if __name__ == "__main__":
    main()
