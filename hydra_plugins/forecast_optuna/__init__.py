"""Hydra's sweeper plugin for `python -m forecast.tune`: Optuna's ask/tell behind `hydra/sweeper=optuna`."""
