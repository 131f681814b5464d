"""The best settings of a tuning, as an artifact of its parent run and back into a training's config.

`python -m forecast.tune` logs `tuned.yaml` to its parent run: the overrides that reproduce its best
trial (the tune command's own training overrides, the model and the best sampled values).
`python -m forecast.train +tuned=<tune run id>` composes the training config again with those
overrides first and the command line's after them, so an override you type wins over a tuned one;
choosing a group (`data=etth1`) drops every tuned override under that group too.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import hydra
import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from forecast import config, tracking
from forecast.errors import InputError

ARTIFACT = "tuned.yaml"


def settings(run_id: str) -> dict:
    """The tuned.yaml of tune run `run_id` (InputError if it is not a finished tune run of this store)."""
    client = MlflowClient(tracking.tracking_uri())
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise InputError(f"tuned={run_id}: no run {run_id} in the tracking store {tracking.tracking_uri()}; check the id") from None
    if run.data.tags.get("kind") != "tune":
        raise InputError(f"tuned={run_id}: run {run_id} is not a tuning (no tag kind=tune); pass the run id forecast.tune printed")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=ARTIFACT, dst_path=tmp, tracking_uri=tracking.tracking_uri()
            )
        except (MlflowException, OSError):
            raise InputError(f"tuned={run_id}: that tuning has no {ARTIFACT} (no trial completed); rerun forecast.tune") from None
        return OmegaConf.to_container(OmegaConf.load(Path(path)))


def compose(cfg: DictConfig, task: list[str], config_name: str = "train") -> DictConfig:
    """The training config again, with tune run `cfg.tuned`'s overrides applied before the command line's `task`."""
    tuned = settings(str(cfg.tuned))["overrides"]
    chosen = [p.key_or_group for o, p in zip(task, config.parse_overrides(task)) if o not in tuned]  # the same choice changes nothing
    kept = [o for o in tuned if not any(covered(config.override_key(o), key) for key in chosen)]
    print(f"tuned={cfg.tuned}: {' '.join(kept) or '(every tuned setting is overridden on the command line)'}")
    return hydra.compose(config_name, overrides=[*kept, *task])


def covered(key: str, chosen: str) -> bool:
    """Whether an override of `chosen` (a key or a group) replaces the tuned override of `key`."""
    key, chosen = key.lstrip("+~"), chosen.lstrip("+~")
    return key == chosen or key.startswith(chosen + ".") or key.startswith(chosen + "/")
