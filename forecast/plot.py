"""The forecast-against-actual plot of the test span (with the quantile bands, if any), logged as a run artifact."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from forecast.quantiles import intervals  # noqa: E402


def plot_test_forecasts(
    index: pd.DatetimeIndex,
    actual: np.ndarray,
    origins: np.ndarray,
    pred: np.ndarray,
    targets: list[str],
    title: str,
    path: Path,
    quantiles: np.ndarray | None = None,
    levels: list[float] | None = None,
    max_panels: int = 6,
) -> Path:
    """Actual values over the test span and forecasts from back-to-back windows, one panel per target.

    `actual` is [T, n_targets] in data units for the whole series, `pred` [N, H, n_targets] in data
    units for the windows starting at `origins`; windows H apart are drawn so they do not overlap.
    `quantiles` [N, H, n_targets, Q] at `levels`: each central interval drawn as a band, the widest palest.
    """
    bands = intervals(list(levels or [])) if quantiles is not None else []
    n = min(len(targets), max_panels)
    horizon = pred.shape[1]
    shown = np.arange(0, len(origins), horizon)
    first, last = origins[0], origins[-1] + horizon
    fig, axes = plt.subplots(n, 1, figsize=(11, 2.4 * n), sharex=True, squeeze=False)
    for k, ax in enumerate(axes[:, 0]):
        ax.plot(index[first:last], actual[first:last, k], color="0.35", lw=0.9, label="actual")
        for j, i in enumerate(shown):
            span = index[origins[i] : origins[i] + horizon]
            for b, (lo, hi, pct) in enumerate(bands):  # from the widest (first) to the narrowest
                ax.fill_between(
                    span,
                    quantiles[i, : len(span), k, lo],
                    quantiles[i, : len(span), k, hi],
                    color="tab:orange",
                    alpha=0.15 + 0.1 * b,
                    lw=0,
                    label=f"{pct}% interval" if j == 0 else None,
                )
            ax.plot(span, pred[i, : len(span), k], color="tab:orange", lw=1.1, label="forecast" if j == 0 else None)
        ax.set_ylabel(targets[k])
    locator = mdates.AutoDateLocator()
    axes[-1, 0].xaxis.set_major_locator(locator)
    axes[-1, 0].xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[0, 0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
