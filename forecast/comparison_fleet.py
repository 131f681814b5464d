"""A comparison on a fleet: the two models paired device by device (forecast/comparison_report.py calls it).

Each training of a fleet logs `evaluation/test_by_series.parquet`: the id column(s) of every series,
then `windows`, `mae`, `rmse`, `mse_scaled` (each series scored on its own test windows, in its own
training-span scale). A model's loss on a series is its `mse_scaled` there, averaged over the
model's seeds; the pairs are the series both models scored. The series are independent units, so
a Wilcoxon signed-rank test across them (`forecast.stats`) asks whether one model is better on the
typical device, with far more power than one series' windows give; the report also says on how many
devices each model wins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecast import stats

FILE = "test_by_series.parquet"
FIRST_SCORE = "windows"  # the id columns come before it


def id_columns(frame: pd.DataFrame) -> list[str]:
    """The series' id column(s) of a test_by_series table: every column before `windows`."""
    columns = list(frame.columns)
    return columns[: columns.index(FIRST_SCORE)] if FIRST_SCORE in columns else []


def series_losses(tables: list[pd.DataFrame]) -> pd.Series:
    """Per-series scaled MSE averaged over the seeds' tables, indexed by the id column(s)."""
    ids = id_columns(tables[0])
    indexed = [t.assign(**{c: t[c].astype(str) for c in ids}).set_index(ids)["mse_scaled"] for t in tables]
    return pd.concat(indexed, axis=1).mean(axis=1)


@dataclass
class SeriesVerdict:
    """Model b against the reference a, device by device."""

    a: str
    b: str
    ids: list[str]  # the id column(s)
    losses: pd.DataFrame  # one row per paired series: a, b (scaled MSE, mean over seeds)
    test: stats.SignedRankTest

    @property
    def n(self) -> int:
        return len(self.losses)

    @property
    def wins_a(self) -> int:
        return int((self.losses["a"] < self.losses["b"]).sum())

    @property
    def wins_b(self) -> int:
        return int((self.losses["b"] < self.losses["a"]).sum())


def series_verdict(by_series: dict[str, pd.DataFrame], runs_a: list[str], runs_b: list[str], a: str, b: str) -> SeriesVerdict | None:
    """The per-device pairing of a's runs against b's, or None when either lacks per-series scores or none pair."""
    if not runs_a or not runs_b or not all(r in by_series for r in [*runs_a, *runs_b]):
        return None
    la, lb = series_losses([by_series[r] for r in runs_a]), series_losses([by_series[r] for r in runs_b])
    losses = pd.concat({"a": la, "b": lb}, axis=1, join="inner").dropna()
    if len(losses) < 2:
        return None
    test = stats.wilcoxon_signed_rank(losses["a"].to_numpy(), losses["b"].to_numpy())
    return SeriesVerdict(a, b, id_columns(by_series[runs_a[0]]), losses, test)


def clause(v: SeriesVerdict, name, p_text) -> str:
    """'across 700 devices the GRU has the lower scaled MSE on 412 (59%), the LSTM on 288 (Wilcoxon signed-rank p = 0.003)'."""
    better, worse = (v.b, v.a) if v.test.median_diff > 0 else (v.a, v.b)
    wins = {v.a: v.wins_a, v.b: v.wins_b}
    return (
        f"across {v.n:,} devices the {name(better)} has the lower test scaled MSE on {wins[better]:,} "
        f"({wins[better] / v.n:.0%}) and the {name(worse)} on {wins[worse]:,} "
        f"(Wilcoxon signed-rank {p_text(v.test.p_value)})"
    )


def metrics(v: SeriesVerdict) -> dict[str, float]:
    """The pairing as metrics of the comparison run, under verdict/<b>_vs_<a>/."""
    return {
        "series_n": v.n,
        f"series_wins_{v.a}": v.wins_a,
        f"series_wins_{v.b}": v.wins_b,
        "series_wilcoxon_p_value": v.test.p_value,
        "series_median_diff": v.test.median_diff,
    }


def section(verdicts: list[tuple[str, SeriesVerdict]], name, p_text) -> list[str]:
    """The report's markdown section: one row per (condition, model pair)."""
    if not verdicts:
        return []
    out = [
        "## Device by device",
        "",
        "Each device's test scaled MSE (its own training-span scale; mean over seeds) from the runs' "
        "`evaluation/test_by_series.parquet`, paired across the devices both models scored. Wilcoxon signed-rank test on "
        "the per-device differences, two-sided (exact distribution up to "
        f"{stats.EXACT_PAIRS} devices, else the normal approximation with tie correction); devices are independent units, "
        "so no correction for overlapping windows applies.",
        "",
        "| condition | models | devices | wins (a / b / tie) | median scaled MSE a | median scaled MSE b "
        "| median difference a - b | Wilcoxon p |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for condition, v in verdicts:
        ties = v.n - v.wins_a - v.wins_b
        out.append(
            f"| {condition} | a = {name(v.a)}, b = {name(v.b)} | {v.n:,} | {v.wins_a:,} / {v.wins_b:,} / {ties:,} "
            f"| {np.median(v.losses['a']):.4f} | {np.median(v.losses['b']):.4f} | {v.test.median_diff:+.4f} | {p_text(v.test.p_value)} |"
        )
    return [*out, ""]
