"""What a tuning's parent run records: the trial table, the history plot, parameter importances, the best settings.

`python -m forecast.tune` calls `record` once the sweep has ended; everything comes from the Optuna
study and the trials' MLflow runs.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from forecast import tracking, tuned, tuning  # noqa: E402


def trial_table(study: optuna.Study, client: MlflowClient) -> pd.DataFrame:
    """One row per trial: number, state, val/best_loss (the objective), sampled settings, its run and fit time."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        run_id = t.user_attrs.get("run_id")
        metrics = client.get_run(run_id).data.metrics if run_id else {}
        state = "INTERRUPTED" if t.user_attrs.get(tuning.INTERRUPTED) else t.state.name
        value = t.value if t.state == TrialState.COMPLETE else metrics.get("val/best_loss")
        rows.append(
            {
                "trial": t.number,
                "state": state,
                "val_best_loss": value,
                "pruned_after_epoch": t.user_attrs.get("pruned_at_epoch"),
                **{f"param.{k}": v for k, v in t.params.items()},
                "fit_s": metrics.get("time/fit_s"),
                "epochs": int(metrics["train/best_epoch"]) + 1 if "train/best_epoch" in metrics else None,
                "run_id": run_id,
                "started": t.datetime_start,
                "duration_s": t.duration.total_seconds() if t.duration else None,
            }
        )
    return pd.DataFrame(rows)


def importances(study: optuna.Study) -> tuple[dict[str, float], str]:
    """Optuna's parameter importances (fANOVA) over the completed trials, or {} and why there are none."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    varied = {k for t in complete for k in t.params if len({str(u.params.get(k)) for u in complete}) > 1}
    if len(complete) < 2 or not varied:
        return {}, f"parameter importances need two or more completed trials that differ ({len(complete)} completed)"
    return optuna.importance.get_param_importances(study), ""


def plot_history(table: pd.DataFrame, title: str, path: Path) -> Path:
    """val/best_loss per trial (pruned ones at their last value, hollow) and the best so far."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    done = table[table["state"] == "COMPLETE"]
    pruned = table[(table["state"] == "PRUNED") & table["val_best_loss"].notna()]
    ax.plot(done["trial"], done["val_best_loss"], "o", color="tab:blue", label="completed")
    ax.plot(pruned["trial"], pruned["val_best_loss"], "o", mfc="none", color="tab:gray", label="pruned (at its stop)")
    if len(done):
        best = done.set_index("trial")["val_best_loss"].cummin()
        ax.step(best.index, best.values, where="post", color="tab:red", label="best so far")
    ax.set(xlabel="trial", ylabel="val/best_loss", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_importances(values: dict[str, float], title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(values) + 1.5))
    names = list(values)[::-1]
    ax.barh(names, [values[n] for n in names], color="tab:blue")
    ax.set(xlabel="importance (fANOVA, sums to 1)", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def record(study: optuna.Study, base: list[str], title: str) -> dict:
    """Log the study to the active (parent) run; return its summary (also logged as metrics)."""
    client = MlflowClient(tracking.tracking_uri())
    table = trial_table(study, client)
    states = table["state"].value_counts().to_dict()
    summary = {
        "tune/trials": int(len(tuning.counted(study))),
        "tune/trials_complete": int(states.get("COMPLETE", 0)),
        "tune/trials_pruned": int(states.get("PRUNED", 0)),
        "tune/trials_failed": int(states.get("FAIL", 0)),
        "tune/fit_s_total": float(table["fit_s"].fillna(0).sum()),
    }
    weights, why_not = importances(study)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        table.to_parquet(tmp / "trials.parquet", index=False)
        table.to_csv(tmp / "trials.csv", index=False)
        for name in ("trials.parquet", "trials.csv"):
            mlflow.log_artifact(str(tmp / name))
        mlflow.log_artifact(str(plot_history(table, title, tmp / "history.png")), "plots")
        if weights:
            mlflow.log_dict(weights, "importances.json")
            mlflow.log_artifact(str(plot_importances(weights, title, tmp / "importances.png")), "plots")
        else:
            mlflow.log_text(why_not + "\n", "importances.txt")
    if tuning.any_complete(study):
        best = study.best_trial
        summary["tune/best_val_loss"] = float(best.value)
        overrides = [*base, *(tuning.override_text(k, v) for k, v in best.params.items())]
        mlflow.log_text(
            yaml.safe_dump({"overrides": overrides, "trial": best.number, "val_best_loss": float(best.value), "study": study.study_name}),
            tuned.ARTIFACT,
        )
    mlflow.log_metrics({k: v for k, v in summary.items() if math.isfinite(v)})
    summary["importances"], summary["importances_note"] = weights, why_not
    return summary
