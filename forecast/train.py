"""python -m forecast.train: read the data, build the model, fit, test, and record it all in MLflow.

    python -m forecast.train model=gru                     # the embedded sample data
    python -m forecast.train -m model=gru,lstm             # both architectures, one run each
    python -m forecast.train data=etth1 data.horizon=192 trainer=ddp trainer.devices=2
    python -m forecast.train +tuned=<tune run id>         # the best settings python -m forecast.tune found

Configuration lives in conf/ (groups: data, model, trainer); the training itself is
forecast/training.py. Bad input ends with a short message and exit status 2.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from forecast import config, pruning, tuned
from forecast.errors import reported
from forecast.training import train
from hydra_plugins.forecast_optuna.sweeper import register as register_sweeper

config.register_resolvers()
register_sweeper()  # hydra/sweeper=optuna, as python -m forecast.tune launches the trials


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(lambda r: "Tip:" not in r.getMessage())
    warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)  # torch 2.13 vs lightning 2.6
    hydra_cfg = HydraConfig.get()
    command = " ".join(["python -m forecast.train", *hydra_cfg.overrides.task])
    with reported():
        if cfg.get("tuned"):  # +tuned=<tune run id>: its best settings, under the command line's own overrides
            cfg = tuned.compose(cfg, list(hydra_cfg.overrides.task))
        with pruning.trial(cfg) as callbacks:  # an Optuna trial (python -m forecast.tune): reports val/loss, may be pruned
            return train(cfg, Path(hydra_cfg.runtime.output_dir), command, callbacks)


if __name__ == "__main__":
    main()
