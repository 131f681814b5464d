"""Who serves: the champion and challengers as registered versions, one holdout for all, the decision.

Every contender forecasts the same most recent windows through its own Forecaster (its own
scaler and lookback); errors are standardised by this data's scaler, so they compare across
models. The alias moves only to a challenger that beats repeating the last value on those windows
and beats the champion by the margin (or replaces a champion that cannot be scored). The decision
can be made on `crps`: a quantile model's from its calibrated quantiles, a point forecast's (the
baseline's, or a point model's) is its scaled MAE, the CRPS of a forecast without spread.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig

from forecast import pyfunc, scoring
from forecast.errors import InputError
from forecast.windows import window_origins


def snapshot(files: list[str], folder: Path, keep_names: bool = False) -> str:
    """Copy the data files, in reading order, into `folder` (what every training reads); sha256 of them.

    Drops are expected to appear whole (written elsewhere, then moved in): the copy is then
    exactly what was validated. keep_names: copy under the same names (a fleet's folder of one file
    per device, whose names are the ids), else prefixed by their reading order.
    """
    digest = hashlib.sha256()
    for i, source in enumerate(files):
        name = Path(source).name if keep_names else f"{i:05d}-{Path(source).name}"
        copy = folder / f"{name}{'' if source.lower().endswith('.csv') else '.csv'}"
        shutil.copyfile(source, copy)
        digest.update(Path(source).name.encode() + b"\0" + copy.read_bytes())
    return digest.hexdigest()


class Contender:
    """A registered model version and its loaded Forecaster."""

    def __init__(self, client: MlflowClient, name: str, version: str):
        self.name, self.version, self.label = name, str(version), f"{name}/{version}"
        self.uri = f"models:/{name}/{version}"
        mv = client.get_model_version(name, self.version)
        self.run_id = mv.run_id
        self.architecture = client.get_run(mv.run_id).data.tags.get("architecture", "?") if mv.run_id else "?"
        try:
            self.model, self.unloadable = pyfunc.load(self.uri)[1], None
        except InputError as e:  # a champion that no longer loads can still be replaced
            self.model, self.unloadable = None, str(e).splitlines()[0]


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version `name@alias` points at, or None when the model or the alias does not exist yet."""
    try:
        version = client.get_registered_model(name).aliases.get(alias)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return None if version is None else str(version)


def find_champion(client: MlflowClient, name: str, alias: str) -> Contender | None:
    version = alias_version(client, name, alias)
    if version is None:
        print(f"champion: none yet ({name}@{alias} does not exist); the best challenger will be promoted")
        return None
    champion = Contender(client, name, version)
    print(f"champion: {champion.label} ({champion.architecture})")
    return champion


class Holdout:
    """The most recent span (the data's test span) and its windows, the same for every contender.

    `champion`: its lookback widens the windows when it is longer; a champion that does not fit
    this data (other columns, frequency or horizon) is left out of the windows' making and marked
    unscorable by `score`.
    """

    def __init__(self, data, champion: Contender | None):
        self.data = data
        lookback = data.lookback
        if champion is not None and fits(data, champion) is None:
            lookback = max(lookback, champion.model.lookback)
        valid = ~np.isnan(data.frame[data.inputs].to_numpy()).any(axis=1)
        self.origins = window_origins(data.spans["test"], lookback, data.horizon, valid)
        if len(self.origins) == 0:
            raise InputError(
                f"the holdout span of {data.report.files[-1]} holds no complete window of lookback {lookback} "
                f"+ horizon {data.horizon}; wait for more data or lower data.lookback"
            )
        index = data.frame.index
        print(
            f"holdout: {len(self.origins):,} windows forecasting {index[self.origins[0]]} to {index[self.origins[-1] + data.horizon - 1]}"
        )

    def baseline(self) -> dict[str, float]:
        """Repeating each target's last value, scored on the same windows: what a model must beat to be promoted."""
        values = self.data.frame[self.data.inputs].to_numpy(dtype=np.float64)  # [R, C]
        last = values[self.origins - 1][:, None, self.data.target_index]  # [N, 1, T]
        rows = self.origins[:, None] + np.arange(self.data.horizon)  # [N, H]
        actual = values[rows][:, :, self.data.target_index]  # [N, H, T]
        pred = np.broadcast_to(last, actual.shape)  # [N, H, T]
        scores = scoring.score(pred, actual, self.data.scaler.std[self.data.target_index])
        scores["crps"] = scores["mae_scaled"]  # the CRPS of a point forecast
        show("baseline", "repeat the last value", scores)
        return scores

    def score(self, role: str, contender: Contender) -> dict[str, float] | str:
        """The contender's errors on the holdout windows, standardised by this data's scaler; why not, when it cannot be scored."""
        why = fits(self.data, contender)
        if why is not None:
            print(f"  {role:<10} {contender.label} ({contender.architecture}): cannot be scored: {why}", flush=True)
            return why
        inputs, actual = contender.model.windows(self.data.frame, self.origins)  # [N, L, C], [N, H, T] data units
        pred = contender.model.forecast(inputs)  # [N, H, T]
        std = self.data.scaler.std[self.data.target_index]
        scores = scoring.score(pred, actual, std)
        if contender.model.levels:  # crps, pinball, coverage and width of its calibrated quantiles
            scores |= scoring.score_quantiles(contender.model.forecast_quantiles(inputs), contender.model.levels, actual, std)
        else:
            scores["crps"] = scores["mae_scaled"]  # the CRPS of a point forecast
        show(role, f"{contender.label} ({contender.architecture})", scores)
        return scores


def fits(data, contender: Contender) -> str | None:
    """Why the contender's model cannot forecast this data's holdout (None: it can)."""
    m = contender.model
    if m is None:
        return contender.unloadable
    try:
        m.check(data.frame, data.report.freq, str(data.report.files[-1]))
    except InputError as e:
        return str(e).splitlines()[0]
    if m.horizon != data.horizon or list(m.targets) != data.targets:
        return (
            f"it forecasts {m.horizon} steps of {', '.join(m.targets)}; this data gives {data.horizon} steps of {', '.join(data.targets)}"
        )
    return None


def show(role: str, who: str, scores: dict[str, float]) -> None:
    print(f"  {role:<10} {who}: " + "  ".join(f"{k} {v:.4g}" for k, v in scores.items()), flush=True)


@dataclass
class Decision:
    """Who serves after a retrain and why.

    winner: the challenger to promote, or None to keep the champion (or to stay without one).
    reason: one sentence for the run's `reason` tag and the console.
    left_out: challengers that could not win, each with why (a non-finite score, no better than the baseline).
    """

    winner: str | None
    reason: str
    left_out: dict[str, str] = field(default_factory=dict)


def decide(
    scores: dict[str, float], baseline: float, margin: float, metric: str = "mse_scaled", champion: float | str | None = None
) -> Decision:
    """The promotion decision, from numbers alone (lower is better).

    scores: each challenger's holdout `metric`; baseline: the last-value baseline's on the same
    windows; margin: the relative gain over the champion needed to replace it; champion: its score,
    None when there is no champion, or why it could not be scored (a string).
    A challenger is eligible only with a finite score below the baseline's. The best eligible one
    is promoted when there is no champion, when the champion cannot be scored or scores non-finite,
    or when it beats the champion by more than `margin`.
    """
    left_out = {}
    for name, value in scores.items():
        if not math.isfinite(value):
            left_out[name] = f"its {metric} is {value}"
        elif not (math.isfinite(baseline) and value < baseline):
            left_out[name] = f"its {metric} {value:.4g} does not beat repeating the last value ({baseline:.4g})"
    eligible = {k: v for k, v in scores.items() if k not in left_out}
    if not eligible:
        why = "; ".join(f"{k}: {v}" for k, v in left_out.items()) or "no challenger was scored"
        return Decision(None, f"no challenger can be promoted ({why})", left_out)
    best = min(eligible, key=eligible.get)
    versus = f"{metric} {eligible[best]:.4g} vs repeating the last value {baseline:.4g}"
    if champion is None:
        return Decision(best, f"no champion yet; {best} has the lowest {versus}", left_out)
    if isinstance(champion, str) or not math.isfinite(champion):
        why = champion if isinstance(champion, str) else f"its {metric} is {champion}"
        return Decision(best, f"the champion cannot be scored on this holdout ({why}); {best} replaces it with {versus}", left_out)
    gain = 1 - eligible[best] / champion if champion > 0 else -math.inf
    versus = f"{metric} {eligible[best]:.4g} vs the champion's {champion:.4g} ({gain:+.1%})"
    if gain > margin:
        return Decision(best, f"{best} is better by more than the margin of {margin:.1%}: {versus}", left_out)
    return Decision(None, f"best challenger {best} is not better by more than the margin of {margin:.1%}: {versus}", left_out)


def promote(
    client: MlflowClient, cfg: DictConfig, name: str, winner: Contender, champion: Contender | None, reason: str
) -> tuple[str | None, str]:
    """Point the alias at the winner `name`, unless it moved since this retrain read it; who won and why."""
    now = alias_version(client, cfg.name, cfg.alias)
    if now != (champion.version if champion else None):
        return None, f"the alias {cfg.name}@{cfg.alias} moved to version {now} during this retrain; left as it is"
    client.set_registered_model_alias(cfg.name, cfg.alias, winner.version)
    client.set_model_version_tag(cfg.name, winner.version, "promoted_by_run", mlflow.active_run().info.run_id)
    return name, reason


def record(scores: dict[str, dict | str], contenders: dict[str, Contender], decision: Decision, failed: list[str]) -> None:
    """The decision as tags, the finite holdout metrics (`<contender>/<metric>`, `baseline/<metric>`) and contenders.json.

    A score that is not finite, or a contender that could not be scored, is recorded as text (in
    contenders.json and the `left_out` tag), never as a metric.
    """
    after = contenders[decision.winner] if decision.winner else contenders.get("champion")
    mlflow.set_tags(
        {
            "decision": "promote" if decision.winner else "keep",
            "reason": decision.reason[:5000],
            "failed": ",".join(failed),
            "left_out": "; ".join(f"{k}: {v}" for k, v in decision.left_out.items())[:5000],
            "champion_after": after.label if after else "none",
        }
    )
    mlflow.log_metrics({f"{who}/{k}": v for who, s in scores.items() if isinstance(s, dict) for k, v in s.items() if math.isfinite(v)})
    mlflow.log_dict(
        {
            who: {
                "model": c.label,
                "architecture": c.architecture,
                "run_id": c.run_id,
                **(scores[who] if isinstance(scores.get(who), dict) else {"not_scored": scores.get(who)}),
            }
            for who, c in contenders.items()
        }
        | {
            "baseline": scores.get("baseline"),
            "failed": failed,
            "winner": decision.winner,
            "reason": decision.reason,
            "left_out": decision.left_out,
        },
        "contenders.json",
    )
