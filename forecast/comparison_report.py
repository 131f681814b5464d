"""The report of a comparison (report.md, report.html, plots, verdict), rebuilt from MLflow alone.

Everything comes from the tracking store (MLFLOW_TRACKING_URI, else sqlite:///mlflow.db): the
parent run's settings and its `speed.json` (the networks' interleaved training-step times,
`forecast.speed`), its children's metrics and val/loss histories, and their `evaluation/`
artifacts (errors per window and per horizon step, an example window; on a fleet, errors per device:
forecast/comparison_fleet.py), so a comparison trained on a cluster can be reported anywhere. A
comparison of quantile models (`model.quantiles`) adds the CRPS and interval coverage per
architecture, a paired test on the per-window CRPS and a reliability plot (nominal against observed
coverage). `python -m forecast.compare` calls `build` at its end, which
also sets the verdict as the parent run's description in the MLflow UI.
"""

from __future__ import annotations

import html
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from forecast import comparison_fleet, comparison_tuning, speed, stats, tracking  # noqa: E402
from forecast.errors import InputError  # noqa: E402

# (label, metric, digits): the per-architecture table, mean ± std over seeds
MEASURED = [
    ("test MSE (scaled)", "test/mse_scaled", 4),
    ("test MAE (scaled)", "test/mae_scaled", 4),
    ("test MAE (data units)", "test/mae", 4),
    ("test RMSE (data units)", "test/rmse", 4),
    ("fit time, s", "time/fit_s", 1),
    ("time per epoch, s", "time/epoch_s", 2),
    ("epochs to best val/loss", "epochs_to_best", 1),
    ("training windows / s", "throughput/train_windows_per_s", 0),
    ("inference ms / window, batch 1", "inference/ms_per_window_b1", 3),
    ("inference ms / window, batch 256", "inference/ms_per_window_b256", 4),
    ("peak RSS, MB", "memory/peak_rss_mb", 0),
    ("CUDA peak allocation, MB", "memory/cuda_peak_mb", 0),
    ("parameters", "model/params", 0),
    ("recurrent parameters", "model/recurrent_params", 0),
    ("hidden size", "hidden_size", 0),
]
COLORS = {"gru": "tab:blue", "lstm": "tab:orange"}
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


# ---- reading the comparison back from MLflow ------------------------------------------------------


SHARED = ("trainer.max_epochs", "patience", "model.lr", "model.loss", "data.batch_size")  # the report's settings line


@dataclass
class Comparison:
    """A parent run and its finished children, as plain values."""

    parent: object  # mlflow Run
    runs: pd.DataFrame  # one row per child: condition, architecture, seed, run_id, metrics, params
    models: list[str]  # in the order given to compare; the first is the reference
    conditions: list[str]  # "base" first
    horizon: int
    by_window: dict[str, pd.DataFrame]  # run id -> origin, mse_scaled, mae_scaled
    by_step: dict[str, pd.DataFrame]  # run id -> step, mse_scaled, mae_scaled
    example: dict[str, pd.DataFrame]  # run id -> the last test window, actual and forecast
    val_loss: dict[str, list[float]]  # run id -> val/loss per epoch
    speed: dict | None  # the parent's speed.json (forecast.speed.measure_comparison), if measured
    by_series: dict[str, pd.DataFrame] = field(default_factory=dict)  # run id -> a fleet's per-series scores (comparison_fleet)


def collect(client: MlflowClient, parent_id: str) -> Comparison:
    parent = tracking.comparison_run(client, parent_id)
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}' and attributes.status = 'FINISHED'"
    )
    if not children:
        raise InputError(f"comparison {parent_id} has no finished child runs yet")
    rows, by_window, by_step, example, val_loss, by_series = [], {}, {}, {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in children:
            rid, m, p, t = run.info.run_id, run.data.metrics, run.data.params, run.data.tags
            rows.append(
                {
                    "run_id": rid,
                    "condition": t.get("condition", "base"),
                    "architecture": t["architecture"],
                    "seed": int(p["seed"]),
                    "lookback": int(p["data.lookback"]),
                    "hidden_size": float(p.get("model.hidden_size", "nan")),
                    "train_fraction": float(p.get("data.train_fraction", 1.0)),
                    **{f"param:{k}": p.get(k) for k in SHARED},
                    "epochs_to_best": m.get("train/best_epoch", np.nan) + 1,
                    **m,
                }
            )
            folder = Path(client.download_artifacts(rid, "evaluation", tmp + "/" + rid))
            by_window[rid] = pd.read_parquet(folder / "test_by_window.parquet")
            by_step[rid] = pd.read_parquet(folder / "test_by_step.parquet")
            if (folder / "example_window.parquet").is_file():  # a fleet's run has plots/worst_series.png instead
                example[rid] = pd.read_parquet(folder / "example_window.parquet")
            if (folder / comparison_fleet.FILE).is_file():
                by_series[rid] = pd.read_parquet(folder / comparison_fleet.FILE)
            val_loss[rid] = [x.value for x in sorted(client.get_metric_history(rid, "val/loss"), key=lambda x: x.step)]
    runs = pd.DataFrame(rows).sort_values(["condition", "architecture", "seed"], ignore_index=True)
    logged = {a.path for a in client.list_artifacts(parent_id)}
    with tempfile.TemporaryDirectory() as tmp:
        read = lambda name: json.loads(Path(client.download_artifacts(parent_id, name, tmp)).read_text()) if name in logged else None  # noqa: E731
        plan, measured = read("comparison.json") or {}, read("speed.json")
    # the plan's order (the first model is the reference); a comparison logged without one: as found
    models = [m for m in plan.get("models", []) if m in set(runs["architecture"])] or sorted(set(runs["architecture"]))
    conditions = [c for c in plan.get("conditions", ["base"]) if c in set(runs["condition"])] or sorted(set(runs["condition"]))
    horizon = int(children[0].data.params["data.horizon"])
    return Comparison(parent, runs, models, conditions, horizon, by_window, by_step, example, val_loss, measured, by_series)


# ---- the numbers -------------------------------------------------------------------------------------


@dataclass
class Verdict:
    """Model b against the reference a in one condition."""

    a: str
    b: str
    mse_a: float  # mean over seeds of the test scaled MSE
    mse_b: float
    test: stats.PairedTest  # Diebold-Mariano on the per-window scaled MSE averaged over seeds
    step: dict | None  # forecast.speed.ratio_spread: a's training step time / b's per round (above 1: b is faster)
    speed: str  # the speed clause of the sentence (also when `step` is None: not measured, nothing to train)
    params_a: float  # trainable parameters, mean over seeds (0 for last_value, seasonal_naive)
    params_b: float
    series: comparison_fleet.SeriesVerdict | None = None  # a fleet: the models paired device by device

    @property
    def rel_diff(self) -> float:
        """(b - a) / a of the scaled MSE: negative when b is more accurate."""
        return (self.mse_b - self.mse_a) / self.mse_a

    @property
    def params_ratio(self) -> float:
        """a's parameters / b's (nan when b has none)."""
        return self.params_a / self.params_b if self.params_b else float("nan")


def window_losses(c: Comparison, condition: str, model: str, loss: str = "mse_scaled") -> pd.Series:
    """Per-window `loss` (scaled MSE, or crps) averaged over the seeds of one model, indexed by forecast origin."""
    ids = c.runs.query("condition == @condition and architecture == @model")["run_id"]
    return pd.concat([per_origin(c.by_window[r], loss) for r in ids], axis=1).mean(axis=1)


def has_quantiles(c: Comparison) -> bool:
    """Whether every run of the comparison forecast quantiles (and so logged test/crps)."""
    return "test/crps" in c.runs and bool(c.runs["test/crps"].notna().all())


def crps_sentence(c: Comparison, a: str, b: str) -> str | None:
    """The verdict on distributions, condition base: CRPS with a paired test on the per-window CRPS, and coverage."""
    runs = c.runs[c.runs["condition"] == "base"]
    if not has_quantiles(c) or not {a, b} <= set(runs["architecture"]):
        return None
    mean = runs.groupby("architecture").mean(numeric_only=True)
    la, lb = window_losses(c, "base", a, "crps").align(window_losses(c, "base", b, "crps"), join="inner")
    test = stats.diebold_mariano(la.to_numpy(), lb.to_numpy(), lag=c.horizon - 1)
    crps_a, crps_b = float(mean.loc[a, "test/crps"]), float(mean.loc[b, "test/crps"])
    better = b if crps_b < crps_a else a
    gain = abs(crps_a - crps_b) / max(crps_a, crps_b)
    how = "is" if test.p_value < 0.05 else "is not significantly"
    coverage = "; ".join(
        f"{pct}% interval covers {', '.join(f'{name(m)} {mean.loc[m, key]:.1%}' for m in (a, b))}" for pct, key in coverage_keys(c)
    )
    return (
        f"On distributions the {name(better)} {how} better: CRPS {name(a)} {crps_a:.4f}, {name(b)} {crps_b:.4f} "
        f"({gain:.1%} lower, Diebold-Mariano on the per-window CRPS {p_text(test.p_value)}); calibrated on validation, the "
        f"{coverage}."
    )


def coverage_keys(c: Comparison) -> list[tuple[str, str]]:
    """(percent, metric) of each central interval the runs logged, widest first."""
    keys = [k for k in c.runs.columns if k.startswith("test/coverage_")]
    return sorted(((k.removeprefix("test/coverage_"), k) for k in keys), key=lambda pk: -float(pk[0]))


def per_origin(windows: pd.DataFrame, loss: str = "mse_scaled") -> pd.Series:
    """A run's per-window `loss` by forecast origin; a fleet's (origins are times, several devices each): the mean per time."""
    if windows["origin"].is_unique:
        return windows.set_index("origin")[loss]
    return windows.groupby("origin")[loss].mean()


def verdict(c: Comparison, condition: str, a: str, b: str) -> Verdict | None:
    runs = c.runs[c.runs["condition"] == condition]
    if not {a, b} <= set(runs["architecture"]):
        return None
    mean = runs.groupby("architecture").mean(numeric_only=True)
    la, lb = window_losses(c, condition, a), window_losses(c, condition, b)
    la, lb = la.align(lb, join="inner")
    step, clause = step_speed(c, condition, a, b)
    run_ids = lambda m: list(runs.loc[runs["architecture"] == m, "run_id"])  # noqa: E731
    return Verdict(
        a,
        b,
        float(mean.loc[a, "test/mse_scaled"]),
        float(mean.loc[b, "test/mse_scaled"]),
        stats.diebold_mariano(la.to_numpy(), lb.to_numpy(), lag=c.horizon - 1),
        step,
        clause,
        float(mean.loc[a, "model/params"]),
        float(mean.loc[b, "model/params"]),
        comparison_fleet.series_verdict(c.by_series, run_ids(a), run_ids(b), a, b),
    )


def step_speed(c: Comparison, condition: str, a: str, b: str) -> tuple[dict | None, str]:
    """a's training-step time against b's, from the interleaved timing in the parent's speed.json, and its clause.

    Epoch times are not used: the trainings ran minutes apart, and on a shared machine their ratio
    reflects what else ran then (see forecast.speed).
    """
    measured = ((c.speed or {}).get("conditions") or {}).get(condition)
    if measured is None or not {a, b} <= set(measured["times"]) | set(measured["untrainable"]):
        return None, f"training speed was not measured (python -m forecast.speed {c.parent.info.run_id} measures it)"
    if a in measured["untrainable"] or b in measured["untrainable"]:  # a baseline without parameters
        return None, "there is no training speed to compare"
    spread = speed.ratio_spread(measured["times"][a], measured["times"][b])
    return spread, speed.verdict(a, b, spread, name)


def name(model: str) -> str:
    return model.upper() if model in ("gru", "lstm") else model


def p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}" if p < 0.1 else f"p = {p:.2f}"


def sentence(v: Verdict, dataset: str) -> str:
    """The plain-language verdict, e.g. 'On sample the LSTM trains 1.08x faster per step than the GRU on this machine ...'."""
    better, worse = (v.b, v.a) if v.mse_b < v.mse_a else (v.a, v.b)
    gain = abs(v.mse_a - v.mse_b) / max(v.mse_a, v.mse_b)
    test = f"Diebold-Mariano {p_text(v.test.p_value)}"
    if v.test.p_value < 0.05:
        accuracy = f"the {name(better)} is {gain:.1%} more accurate (its test scaled MSE is {gain:.1%} lower, {test})"
    else:
        accuracy = f"their accuracy does not differ significantly (the {name(better)}'s test scaled MSE is {gain:.1%} lower, {test})"
    if v.series is not None:  # a fleet: the devices are the paired units
        pooled = f"pooled over all test windows the {name(better)}'s scaled MSE is {gain:.1%} lower"
        per_device = comparison_fleet.clause(v.series, name, p_text)
        if v.series.test.p_value < 0.05:
            typical = v.b if v.series.test.median_diff > 0 else v.a
            accuracy = f"the {name(typical)} is more accurate device by device: {per_device}; {pooled}"
        else:
            accuracy = f"their accuracy does not differ significantly device by device ({per_device}); {pooled}"
    none = [m for m, n in ((v.a, v.params_a), (v.b, v.params_b)) if not n]
    if none:
        params = f"the {' and the '.join(map(name, none))} {'has' if len(none) == 1 else 'have'} no parameters"
    else:
        small, pr = (v.a, v.params_ratio) if v.params_ratio <= 1 else (v.b, 1 / v.params_ratio)
        params = (
            f"both have the same number of parameters within {1 - pr:.1%}"
            if 1 - pr < 0.02
            else f"the {name(small)} has {1 - pr:.0%} fewer parameters"
        )
    if v.step is None:  # speed not measured, or nothing to train
        return f"On {dataset} {accuracy}; {params}; {v.speed}."
    return f"On {dataset} {v.speed}, and {accuracy}; {params}."


def spread(values: pd.Series, digits: int) -> str:
    values = values.dropna()
    if values.empty:
        return ""
    if len(values) == 1 or digits == 0 and values.nunique() == 1:
        return f"{values.iloc[0]:,.{digits}f}"
    return f"{values.mean():,.{digits}f} ± {values.std():,.{digits}f}"


# ---- the report ----------------------------------------------------------------------------------------


def build(parent_id: str, folder: Path, log: bool = True) -> Path:
    """Write report.md, report.html, verdict.txt and the plots to `folder`; log them to the parent run."""
    client = MlflowClient(tracking.tracking_uri())
    c = collect(client, parent_id)
    folder.mkdir(parents=True, exist_ok=True)
    dataset = c.parent.data.tags.get("dataset", "this data")
    a = c.models[0]
    verdicts = {(cond, b): verdict(c, cond, a, b) for cond in c.conditions for b in c.models[1:]}
    base = [v for (cond, _), v in verdicts.items() if cond == "base" and v is not None]
    sentences = [sentence(v, dataset) for v in base]
    sentences += [text for text in (crps_sentence(c, a, v.b) for v in base) if text]
    (folder / "verdict.txt").write_text("\n".join(sentences) + "\n")
    plots = {
        "error_vs_fit_time.png": plot_error_vs_fit_time(c),
        "val_loss_by_epoch.png": plot_val_loss(c),
        "error_by_step.png": plot_error_by_step(c),
    }
    if c.example:
        plots["example_forecast.png"] = plot_example(c)
    if has_quantiles(c):
        plots["reliability.png"] = plot_reliability(c)
    for file, fig in plots.items():
        fig.savefig(folder / file, dpi=90)
        plt.close(fig)
    text = markdown(c, dataset, sentences, verdicts, list(plots))
    (folder / "report.md").write_text(text)
    (folder / "report.html").write_text(to_html(text, f"Comparison on {dataset}"))
    if log:
        client.log_artifacts(parent_id, str(folder), "report")
        tracking.describe(client, parent_id, description(sentences, c))
        for v in base:
            prefix = f"verdict/{v.b}_vs_{v.a}"
            step = {f"step_time_{k}": v.step[k] for k in ("ratio", "ratio_q25", "ratio_q75")} if v.step else {}
            for key, value in {
                **(comparison_fleet.metrics(v.series) if v.series else {}),
                "mse_rel_diff": v.rel_diff,
                "dm_p_value": v.test.p_value,
                "dm_statistic": v.test.statistic,
                **step,
                "params_ratio": v.params_ratio,
            }.items():
                if np.isfinite(value):
                    client.log_metric(parent_id, f"{prefix}/{key}", value)
    return folder


def description(sentences: list[str], c: Comparison) -> str:
    """The parent run's description in the MLflow UI: the verdict, and where the full report is."""
    return "\n\n".join(
        [
            "**Verdict**",
            *sentences,
            f"The {len(c.runs)} training runs are this run's children (expand it in the "
            "experiment's run list). Full report: artifacts `report/report.html` (also `report.md` and the plots).",
        ]
    )


def markdown(c: Comparison, dataset: str, sentences: list[str], verdicts: dict, plots: list[str]) -> str:
    p, t = c.parent.data.params, c.parent.data.tags
    base = c.runs[c.runs["condition"] == "base"]

    def shared(key: str) -> str:  # a setting's one value over the children (budget=tuned: lr and loss are each architecture's own)
        values = c.runs[f"param:{key}"].dropna().unique() if f"param:{key}" in c.runs else []
        return str(values[0]) if len(values) == 1 else "differing by run (see below)" if len(values) else "?"

    out = [
        f"# {' or '.join(map(name, c.models))} on {dataset}",
        "",
        f"Comparison run `{c.parent.info.run_id}`; {len(c.runs)} finished child runs. Command: `{t.get('command', '?')}`.",
        "",
        f"Machine: {t.get('machine', '?')}. Launcher: {t.get('launcher', '?')}"
        + (
            "."
            if t.get("launcher", "").startswith("basic")
            else ": pairs that ran at the same time shared the machine, which slows their timings."
        ),
        "",
        f"Settings shared by every run: lookback {p.get('data.lookback')}, horizon {c.horizon}, "
        f"at most {shared('trainer.max_epochs')} epochs, early stopping after {shared('patience')} epochs without a better "
        f"val/loss, AdamW lr {shared('model.lr')}, loss {shared('model.loss')}, batch {shared('data.batch_size')}, "
        f"seeds {', '.join(map(str, sorted(c.runs['seed'].unique())))}, budget `{p.get('budget')}` (hidden sizes below).",
        "",
        "## Verdict",
        "",
        *[f"**{s}**" for s in sentences],
        "",
    ]
    out += [
        "Paired test: Diebold-Mariano on the test windows' scaled MSE (each window's loss averaged over the seeds "
        f"of a model), two-sided, with a Newey-West (Bartlett) variance over {c.horizon - 1} lags, since windows one step apart "
        f"share all but one target step. Speed: {speed_protocol(c)}. A speed difference is claimed only when the interquartile "
        "range (IQR) of the per-round ratios excludes 1. The epoch times below come from trainings that ran one after another "
        "or side by side (the launcher above), so other work on the machine, and each other, move them; the verdict does not "
        "use them.",
        "",
        "| condition | model | test MSE (scaled) | difference from " + name(c.models[0]) + " | DM statistic | p-value | "
        "step time ratio (IQR) | parameter ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (cond, b), v in verdicts.items():
        if v is not None:
            step = f"{v.step['ratio']:.2f} ({v.step['ratio_q25']:.2f}-{v.step['ratio_q75']:.2f})" if v.step else "-"
            out.append(
                f"| {cond} | {name(b)} | {v.mse_b:.4f} (vs {v.mse_a:.4f}) | {v.rel_diff:+.1%} | {v.test.statistic:.2f} | "
                f"{v.test.p_value:.3g} | {step} | {v.params_ratio:.2f} |".replace("| nan |", "| - |")
            )
    out += ["", "Ratios are " + name(c.models[0]) + " / the other model: above 1 the other model is faster (or smaller).", ""]
    out += comparison_fleet.section([(cond, v.series) for (cond, _), v in verdicts.items() if v and v.series], name, p_text)
    out += claims(c, verdicts)
    out += [
        f"## Measured per architecture ({dataset}, condition base, mean ± std over {base['seed'].nunique()} seeds)",
        "",
        "| | " + " | ".join(map(name, c.models)) + " |",
        "|---|" + "---:|" * len(c.models),
    ]
    distribution = [("test CRPS (scaled)", "test/crps", 4)] if has_quantiles(c) else []
    for pct, key in coverage_keys(c) if has_quantiles(c) else []:
        distribution += [
            (f"test coverage of the {pct}% interval", key, 3),
            (f"test width of the {pct}% interval (scaled)", f"test/interval_width_{pct}", 3),
        ]
    for label, key, digits in [*MEASURED[:4], *distribution, *MEASURED[4:]]:
        if key in base and base[key].notna().any():
            out.append(f"| {label} | " + " | ".join(spread(base.loc[base["architecture"] == m, key], digits) for m in c.models) + " |")
    steps = ((c.speed or {}).get("conditions") or {}).get("base")
    if steps:  # medians of the interleaved timing (forecast.speed), not of the trainings
        out.append(
            "| training step, ms (interleaved timing) | "
            + " | ".join(
                f"{steps['step_ms'][m]:.1f}" if m in steps["step_ms"] else "nothing to train" if m in steps["untrainable"] else ""
                for m in c.models
            )
            + " |"
        )
    out += [
        "",
        "Peak RSS is the training process's high-water mark: with the basic launcher all pairs share one process, so "
        "runs after the first report at least the largest before them.",
        "",
    ]
    if len(c.conditions) > 1:
        out += [
            "## Sub-comparisons",
            "",
            "| condition | lookback | training windows | "
            + " | ".join(f"{name(m)} MSE (scaled) | {name(m)} s / epoch" for m in c.models)
            + " |",
            "|---|---:|---:|" + "---:|" * 2 * len(c.models),
        ]
        for cond in c.conditions:
            runs = c.runs[c.runs["condition"] == cond]
            cells = [
                f"{spread(runs.loc[runs['architecture'] == m, 'test/mse_scaled'], 4)} | "
                f"{spread(runs.loc[runs['architecture'] == m, 'time/epoch_s'], 2)}"
                for m in c.models
            ]
            out.append(f"| {cond} | {runs['lookback'].iloc[0]} | {train_share(runs)} | " + " | ".join(cells) + " |")
        out.append("")
    out += comparison_tuning.report_lines(c.parent)  # budget=tuned: the tuning cost per architecture
    out += [
        "## Plots",
        "",
        *[f"![{file[:-4].replace('_', ' ')}]({file})" for file in plots],
        "",
        "## Runs",
        "",
        "| condition | model | seed | run | test MSE (scaled) | fit s |",
        "|---|---|---:|---|---:|---:|",
    ]
    for _, r in c.runs.iterrows():
        out.append(
            f"| {r['condition']} | {name(r['architecture'])} | {r['seed']} | `{r['run_id']}` | "
            f"{r['test/mse_scaled']:.4f} | {r['time/fit_s']:.1f} |"
        )
    return "\n".join(out) + "\n"


def speed_protocol(c: Comparison) -> str:
    if c.speed is None:
        return f"not measured for this comparison (python -m forecast.speed {c.parent.info.run_id} measures it)"
    return c.speed["protocol"]


def train_share(runs: pd.DataFrame) -> str:
    fraction = runs["train_fraction"].iloc[0]
    return "all" if fraction >= 1 else f"most recent {fraction:.0%}"


def claims(c: Comparison, verdicts: dict) -> list[str]:
    """The textbook claims about GRU and LSTM beside what this comparison measured."""
    if not {"gru", "lstm"} <= set(c.models):
        return []
    base = verdicts.get(("base", "lstm")) if c.models[0] == "gru" else verdict(c, "base", "gru", "lstm")
    if base is None:
        return []
    v = lambda cond: verdict(c, cond, "gru", "lstm")  # noqa: E731
    acc = lambda x: f"LSTM {x.rel_diff:+.1%} scaled MSE against the GRU ({p_text(x.test.p_value)})" if x else "not measured"  # noqa: E731
    small = [cond for cond in c.conditions if cond.startswith("train-")]
    longer = [cond for cond in c.conditions if cond.startswith("lookback-")]
    lookback = c.runs.loc[c.runs["condition"] == "base", "lookback"].iloc[0]
    rows = [
        (
            "The GRU has 25% fewer parameters (3 gate blocks against 4)",
            f"GRU / LSTM parameters = {base.params_ratio:.2f} in all, {recurrent_ratio(c):.2f} in the recurrent cell",
        ),
        ("The GRU trains 20-40% faster", base.speed),
        ("They are about as accurate", f"{acc(base)} at lookback {lookback}"),
        (
            "The GRU is better on small data",
            "; ".join(f"{cond}: {acc(v(cond))}" for cond in small) if small else "not measured here (run with small_data=true)",
        ),
        (
            "The LSTM holds long dependencies better",
            "; ".join(f"{cond}: {acc(v(cond))} (at {lookback}: {base.rel_diff:+.1%})" for cond in longer)
            if longer
            else "not measured here (run with e.g. 'lookbacks=[96,720]')",
        ),
    ]
    return [
        "## Textbook claims against this measurement",
        "",
        "| claim | measured here |",
        "|---|---|",
        *[f"| {claim} | {found} |" for claim, found in rows],
        "",
    ]


def recurrent_ratio(c: Comparison) -> float:
    base = c.runs[c.runs["condition"] == "base"].groupby("architecture")["model/recurrent_params"].mean()
    return float(base["gru"] / base["lstm"]) if base.get("lstm") else float("nan")


# ---- plots (condition base) ---------------------------------------------------------------------------


def base_runs(c: Comparison, model: str) -> pd.DataFrame:
    return c.runs.query("condition == 'base' and architecture == @model")


def plot_error_vs_fit_time(c: Comparison):
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    scale = 400 / c.runs["model/params"].max()
    for m in c.models:
        runs = base_runs(c, m)
        ax.scatter(
            runs["time/fit_s"],
            runs["test/mse_scaled"],
            s=runs["model/params"] * scale + 10,
            alpha=0.6,
            color=COLORS.get(m),
            label=f"{name(m)} ({runs['model/params'].mean():,.0f} params)",
        )
    ax.set(xlabel="fit time, s", ylabel="test MSE (scaled)", title="Error against fit time (one point per seed; size: parameters)")
    ax.legend(fontsize=8, markerscale=0.5)
    fig.tight_layout()
    return fig


def plot_val_loss(c: Comparison):
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for m in c.models:
        for i, rid in enumerate(base_runs(c, m)["run_id"]):
            losses = c.val_loss[rid]
            ax.plot(range(1, len(losses) + 1), losses, color=COLORS.get(m), alpha=0.75, lw=1.2, label=name(m) if i == 0 else None)
    ax.set(xlabel="epoch", ylabel="val/loss (MSE, scaled)", title="Validation loss by epoch (one line per seed)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_error_by_step(c: Comparison):
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for m in c.models:
        steps = np.stack([c.by_step[rid]["mse_scaled"].to_numpy() for rid in base_runs(c, m)["run_id"]])  # [seeds, H]
        x = np.arange(1, steps.shape[1] + 1)
        ax.plot(x, steps.mean(axis=0), color=COLORS.get(m), label=name(m))
        ax.fill_between(x, steps.min(axis=0), steps.max(axis=0), color=COLORS.get(m), alpha=0.2, lw=0)
    ax.set(xlabel="horizon step", ylabel="test MSE (scaled)", title="Error by horizon step (mean; band: min-max over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_reliability(c: Comparison):
    """Nominal against observed test coverage of each central interval, one line per architecture (condition base)."""
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    keys = coverage_keys(c)
    nominal = [float(pct) / 100 for pct, _ in keys]
    for m in c.models:
        runs = base_runs(c, m)
        ax.plot(nominal, [runs[k].mean() for _, k in keys], "o-", color=COLORS.get(m), label=name(m))
    ax.plot([0, 1], [0, 1], color="0.5", lw=0.8, ls="--", label="perfect calibration")
    ax.set(xlabel="nominal coverage", ylabel="observed test coverage", title="Reliability of the central intervals")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_example(c: Comparison):
    """The last test window of each model's first seed, for the last target (e.g. OT on ETT)."""
    fig, axes = plt.subplots(len(c.models), 1, figsize=(8, 2.4 * len(c.models)), sharex=True, squeeze=False)
    for ax, m in zip(axes[:, 0], c.models):
        frame = c.example[base_runs(c, m).sort_values("seed")["run_id"].iloc[0]]
        target = [col for col in frame.columns if col.endswith(":forecast")][-1].removesuffix(":forecast")
        ax.plot(frame["timestamp"], frame[target], color="0.3", lw=1, label="actual")
        ax.plot(frame["timestamp"], frame[f"{target}:forecast"], color=COLORS.get(m), lw=1.4, label=f"{name(m)} forecast")
        ax.set_ylabel(target)
        ax.legend(fontsize=8, loc="upper left")
    axes[0, 0].set_title("The last test window: lookback, then the forecast against the actual values")
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


# ---- HTML copy --------------------------------------------------------------------------------------------


def to_html(text: str, title: str) -> str:
    """A small Markdown subset (headings, tables, images, bold, code, paragraphs) as one HTML page."""
    inline = lambda s: re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(s)))  # noqa: E731
    body, table = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [x.strip() for x in line.strip("|").split("|")]
            if not all(set(x) <= set("-:") for x in cells):
                tag = "th" if not table else "td"
                table.append("<tr>" + "".join(f"<{tag}>{inline(x)}</{tag}>" for x in cells) + "</tr>")
            continue
        if table:
            body.append("<table>" + "".join(table) + "</table>")
            table = []
        if image := re.fullmatch(r"!\[(.*)\]\((.*)\)", line):
            body.append(f'<p><img src="{html.escape(image[2])}" alt="{html.escape(image[1])}"></p>')
        elif heading := re.fullmatch(r"(#+) (.*)", line):
            body.append(f"<h{len(heading[1])}>{inline(heading[2])}</h{len(heading[1])}>")
        elif line:
            body.append(f"<p>{inline(line)}</p>")
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:auto} table{border-collapse:collapse} "
        "td,th{border:1px solid #ccc;padding:2px 6px}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
