"""Who serves: the champion and challengers as registered versions, one holdout for all, the decision.

Every contender forecasts the same most recent windows through its own Forecaster (its own
scaler and lookback); errors are standardised by this data's scaler, so they compare across
models. The alias moves only to a challenger that beats the champion by the margin.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig

from forecast import pyfunc, scoring
from forecast.errors import InputError
from forecast.windows import window_origins


def snapshot(files: list[str], folder: Path) -> str:
    """Copy the data files, in reading order, into `folder` (what every training reads); sha256 of them.

    Drops are expected to appear whole (written elsewhere, then moved in): the copy is then
    exactly what was validated.
    """
    digest = hashlib.sha256()
    for i, source in enumerate(files):
        copy = folder / f"{i:05d}-{Path(source).name}{'' if source.lower().endswith('.csv') else '.csv'}"
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
        self.model = pyfunc.load(self.uri)[1]


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
    """The most recent span (the data's test span) and its windows, the same for every contender."""

    def __init__(self, data, champion: Contender | None):
        self.data = data
        lookback = data.lookback
        if champion is not None:
            m = champion.model
            champion.model.check(data.frame, data.report.freq, str(data.report.files[-1]))
            if m.horizon != data.horizon or list(m.targets) != data.targets:
                raise InputError(f"the champion {champion.label} forecasts {m.horizon} steps of {', '.join(m.targets)}; this data gives "
                                 f"{data.horizon} steps of {', '.join(data.targets)}.\nSet data.horizon / data.targets to match, "
                                 f"or point the alias by hand (MlflowClient().set_registered_model_alias).")
            lookback = max(lookback, m.lookback)
        valid = ~np.isnan(data.frame[data.inputs].to_numpy()).any(axis=1)
        self.origins = window_origins(data.spans["test"], lookback, data.horizon, valid)
        if len(self.origins) == 0:
            raise InputError(f"the holdout span of {data.report.files[-1]} holds no complete window of lookback {lookback} "
                             f"+ horizon {data.horizon}; wait for more data or lower data.lookback")
        index = data.frame.index
        print(f"holdout: {len(self.origins):,} windows forecasting {index[self.origins[0]]} to {index[self.origins[-1] + data.horizon - 1]}")

    def score(self, role: str, contender: Contender) -> dict[str, float]:
        """The contender's errors on the holdout windows, standardised by this data's scaler."""
        inputs, actual = contender.model.windows(self.data.frame, self.origins)       # [N, L, C], [N, H, T] data units
        pred = contender.model.forecast(inputs)                                       # [N, H, T]
        scores = scoring.score(pred, actual, self.data.scaler.std[self.data.target_index])
        print(f"  {role:<10} {contender.label} ({contender.architecture}): " + "  ".join(f"{k} {v:.4g}" for k, v in scores.items()), flush=True)
        return scores


def decide(scores: dict[str, float], margin: float, metric: str = "mse_scaled") -> tuple[str | None, str]:
    """The challenger to promote (None: keep the champion) and why; `scores` may hold "champion"."""
    challengers = {k: v for k, v in scores.items() if k != "champion" and math.isfinite(v)}
    if not challengers:
        return None, "no challenger to judge"
    best = min(challengers, key=challengers.get)
    if "champion" not in scores:
        return best, f"no champion yet; {best} has the lowest {metric} ({challengers[best]:.4g})"
    champion = scores["champion"]
    gain = 1 - challengers[best] / champion if champion > 0 else -math.inf
    versus = f"{metric} {challengers[best]:.4g} vs the champion's {champion:.4g} ({gain:+.1%})"
    if gain > margin:
        return best, f"{best} is better by more than the margin of {margin:.1%}: {versus}"
    return None, f"best challenger {best} is not better by more than the margin of {margin:.1%}: {versus}"


def promote(client: MlflowClient, cfg: DictConfig, name: str, winner: Contender, champion: Contender | None,
            reason: str) -> tuple[str | None, str]:
    """Point the alias at the winner `name`, unless it moved since this retrain read it; who won and why."""
    now = alias_version(client, cfg.name, cfg.alias)
    if now != (champion.version if champion else None):
        return None, f"the alias {cfg.name}@{cfg.alias} moved to version {now} during this retrain; left as it is"
    client.set_registered_model_alias(cfg.name, cfg.alias, winner.version)
    client.set_model_version_tag(cfg.name, winner.version, "promoted_by_run", mlflow.active_run().info.run_id)
    return name, reason


def record(scores: dict[str, dict], contenders: dict[str, Contender], winner: str | None, reason: str, failed: list[str]) -> None:
    """The decision as tags, every contender's holdout metrics (`<contender>/<metric>`) and contenders.json, on the retrain run."""
    after = contenders[winner] if winner else contenders.get("champion")
    mlflow.set_tags({"decision": "promote" if winner else "keep", "reason": reason, "failed": ",".join(failed),
                     "champion_after": after.label if after else "none"})
    mlflow.log_metrics({f"{who}/{k}": v for who, s in scores.items() for k, v in s.items()})
    mlflow.log_dict({who: {"model": c.label, "architecture": c.architecture, "run_id": c.run_id, **scores[who]}
                     for who, c in contenders.items()} | {"failed": failed, "winner": winner, "reason": reason}, "contenders.json")
