"""One training, top to bottom: read the data, build the model, fit, test, and record it all in MLflow.

`python -m forecast.train` (forecast/train.py) calls `train` with the composed config; the tests
call it in-process. Nothing half-trained is recorded as a success.
"""

from __future__ import annotations

import math
import os
import resource
import socket
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import mlflow
import numpy as np
import pandas as pd
import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from mlflow import MlflowClient
from mlflow.models import ModelSignature, infer_signature
from omegaconf import DictConfig, OmegaConf

import forecast
from forecast import config, evaluate, fleet_evaluate, fleet_share, speed, tracking
from forecast.errors import InputError, JobFailed
from forecast.forecaster import Forecaster
from forecast.lightning_module import StopOnNonFinite
from forecast.networks import count_parameters
from forecast.plot import plot_test_forecasts
from forecast.pyfunc import ForecastPyfunc
from forecast.pyfunc import load as load_model
from forecast.quantiles import label, windows_needed


def train(cfg: DictConfig, output_dir: Path, command: str, extra_callbacks: Sequence[Callback] = ()) -> float | None:
    """One training; returns the best validation loss (what a sweep minimises).

    output_dir: this training's own folder (checkpoints); command: the command line, as a run tag;
    extra_callbacks: e.g. a tuning trial's pruning (forecast/pruning.py), which may end it before its test.
    Raises InputError for bad settings or data (before any run exists), JobFailed when the loss or
    a test score becomes non-finite (the run is then FAILED and no model is logged or registered).
    """
    speed.use_threads(cfg.threads)  # before any torch work (conf/train.yaml: threads)
    check_settings(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    best = ModelCheckpoint(dirpath=Path(output_dir) / "checkpoints", filename="best", monitor="val/loss", mode="min")
    epochs = tracking.EpochLog()
    callbacks = [StopOnNonFinite(), EarlyStopping("val/loss", patience=cfg.patience), best, epochs, *extra_callbacks]  # guard before log
    trainer = config.build(cfg.trainer, callbacks=callbacks, logger=False, default_root_dir=str(output_dir))
    data = config.build(cfg.data, **fleet_share.share(trainer, cfg))  # trainer=ddp on a fleet: this process's share of the devices
    say(*data.report.lines(), f"windows: {data.windows}")
    experiment_id = None
    if tracking.is_rank_zero():
        experiment_id = tracking.connect(cfg.tracking.experiment)
        tracking.mark_dead_runs(MlflowClient(), experiment_id)  # this host's runs whose process is gone: KILLED
    module = config.build(cfg.model, **data.model_args())
    if cfg.get("init_from"):  # warm start: +init_from=<model URI> (python -m forecast.retrain warm_start=true)
        warm_start(module.net, cfg.init_from)

    architecture = module.architecture
    tags = {
        "architecture": architecture,
        "dataset": data.name,
        "command": command,
        "process": f"{socket.gethostname()}:{os.getpid()}",  # lets a later run tell a crashed run from a live one
        **cfg.tracking.tags,
    }
    if cfg.tracking.parent:  # a child of a comparison (python -m forecast.compare)
        tags["mlflow.parentRunId"] = str(cfg.tracking.parent)
    trainable = any(p.requires_grad for p in module.parameters())  # baselines may have nothing to fit
    with tracking.start_run(experiment_id, f"{architecture}-{data.name}", tags) as run:
        if run is not None:
            mlflow.log_params(tracking.flatten(cfg))
        shared = getattr(data, "world_size", 1) > 1  # a fleet in shares: every process tests its own devices
        started = time.perf_counter()
        if trainable:
            trainer.fit(module, datamodule=data)
        elif shared:  # nothing to fit: validating launches the processes and opens the process group the test gathers over
            trainer.validate(module, datamodule=data, verbose=False)
        fit_s = time.perf_counter() - started
        pruned = [c for c in extra_callbacks if getattr(c, "pruned_at", None)]
        if run is None and (pruned or not shared):  # a non-zero DDP rank: rank zero evaluates and records
            return None
        if pruned:  # a tuning trial its pruner stopped: scored on validation only
            return pruned[0].record(epochs, fit_s, len(data.datasets["train"]))
        if trainable and not restore_best(module, best, trainer, shared):
            if run is None:
                return None
            raise JobFailed("training ended without a checkpoint of a finite val/loss; nothing was logged as a model")
        module.to(trainer.strategy.root_device)
        metrics = record(cfg, run, data, module, epochs, fit_s)
        if metrics is None:  # a non-zero rank of a fleet in shares: its devices tested, rank zero records
            return None
    fitted = (
        f"fit {fit_s:.1f} s, {metrics['time/epoch_s']:.2f} s/epoch, {len(epochs.epoch_s)} epochs" if epochs.epoch_s else "nothing to fit"
    )
    print(
        f"{architecture} on {data.name}: {metrics['model/params']:,.0f} params "
        f"({metrics['model/recurrent_params']:,.0f} recurrent) | {fitted} | "
        f"test MAE {metrics['test/mae']:.4g} RMSE {metrics['test/rmse']:.4g} "
        f"MSE(scaled) {metrics['test/mse_scaled']:.4f} vs last value {metrics['baseline/mse_scaled']:.4f} | "
        + "".join(f"{k.removeprefix('test/')} {v:.4f} " for k, v in metrics.items() if k.startswith(("test/crps", "test/coverage_")))
        + ("| " if "test/crps" in metrics else "")
        + f"run {run.info.run_id}"
    )
    print(tracking.ui_hint(experiment_id))
    return float(best.best_model_score) if best.best_model_score is not None else None


def check_settings(cfg: DictConfig) -> None:
    """Refuse out-of-range training settings before any data is read or run created (InputError).

    The model config is built once on a one-channel stand-in of the data's shapes, so every setting
    the network checks is checked here too; Lightning checks the trainer's when it is built.
    """
    if not isinstance(cfg.trainer.max_epochs, int) or cfg.trainer.max_epochs < 1:
        raise InputError(f"trainer.max_epochs={cfg.trainer.max_epochs}: train for at least one epoch")
    if not isinstance(cfg.patience, int) or cfg.patience < 0:
        raise InputError(f"patience={cfg.patience}: give the number of epochs without a better val/loss before stopping (0 or more)")
    clip = cfg.trainer.get("gradient_clip_val")
    if clip is not None and not (isinstance(clip, (int, float)) and 0 <= clip < math.inf):
        raise InputError(f"trainer.gradient_clip_val={clip}: give a finite norm of 0 or more, or null for no clipping")
    if cfg.model.get("quantiles") and "series_column" in cfg.data:
        raise InputError(
            f"model.quantiles={list(cfg.model.quantiles)} with a fleet (data.series_column): quantile forecasts are not "
            "calibrated per device yet.\nTrain the fleet with model.quantiles=null, or one device's file with data=csv."
        )
    lookback, horizon = cfg.data.get("lookback"), cfg.data.get("horizon")
    if not all(isinstance(v, int) and v >= 1 for v in (lookback, horizon)):
        return  # the data module names the bad lookback or horizon
    segment = cfg.model.get("segment_len")
    if cfg.model.get("network", "recurrent") == "recurrent" and isinstance(segment, int) and segment > lookback:
        divisor = max(d for d in range(1, lookback // 2 + 1) if lookback % d == 0)
        raise InputError(
            f"model.segment_len={segment} is longer than data.lookback={lookback}: a window would be one padded segment.\n"
            f"Set model.segment_len to at most {lookback} (a divisor of it, e.g. {divisor})."
        )
    stand_in = {"step": 1} if "series_column" in cfg.data else {}  # a fleet's step (calendar features): known once read
    config.build(cfg.model, lookback=lookback, horizon=horizon, n_inputs=1, target_index=[0], **stand_in)


def restore_best(module, best: ModelCheckpoint, trainer, shared: bool) -> bool:
    """Load the best checkpoint's weights into `module`; False when training left none.

    shared (a fleet in shares, every process tests its own devices): rank zero reads the checkpoint and
    broadcasts the weights, so every process tests the same model, with or without a shared file system.
    """
    state = None
    if tracking.is_rank_zero() and best.best_model_path:
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
    if shared:
        state = trainer.strategy.broadcast(state, src=0)
    if state is None:
        return False
    module.load_state_dict(state)
    return True


def record(cfg: DictConfig, run, data, module, epochs: tracking.EpochLog, fit_s: float) -> dict[str, float] | None:
    """Calibrate the quantiles (if any) on the validation span, test the restored best model, and log
    metrics, report, plot and the servable model.

    A fleet trained in shares (trainer=ddp): every process calls it and tests its own devices; rank zero
    combines the parts (forecast/fleet_evaluate.py) and records; the other ranks return None.
    """
    forecaster = Forecaster(module.net, data.scaler, data.inputs, data.targets, data.report.freq, module.net_args, module.levels)
    fleet = getattr(data, "fleet", None)  # a fleet (forecast/fleet_datamodule.py): scored per device
    report, windows, train_windows = data.report, data.windows, len(data.datasets["train"])
    if fleet is not None:
        forecaster.series_columns = data.series_columns
        forecaster.static_columns, forecaster.static_values = list(data.static_columns), list(data.static_values)
    elif forecaster.levels:  # split-conformal offsets per step and target from the validation windows (forecast/quantiles.py)
        calibrating = recent(data.datasets["val"].origins, module.hparams.calibration_window, windows_needed(forecaster.levels))
        forecaster.calibrate(*forecaster.windows(data.frame, calibrating))
    started = time.perf_counter()
    if fleet is None:
        test = evaluate.forecast_test(forecaster, data.frame, data.datasets["test"].origins)
        metrics = evaluate.test_metrics(test)
    else:
        test = fleet_evaluate.fleet_test(forecaster, data)  # every process its own devices, combined on rank zero
        if test is None:
            return None
        test.describe(forecaster)  # every device's scaler and id, for the saved model
        metrics, report, windows, train_windows = dict(test.metrics), test.report, test.windows, test.windows["train"]
    predict_s = time.perf_counter() - started  # every test window, as the peers benchmark times it
    counts = count_parameters(module.net)
    metrics |= {
        "time/fit_s": fit_s,
        "time/predict_s": predict_s,
        "model/params": counts["params"],
        "model/recurrent_params": counts["recurrent_params"],
    }
    if epochs.epoch_s:
        metrics |= epochs.timing(train_windows) | {
            "train/best_epoch": int(np.argmin(epochs.val_loss)),
            "val/best_loss": min(epochs.val_loss),
        }
    if fleet is None:
        inputs, _ = forecaster.windows(data.frame, test.origins[-256:])
    else:
        inputs = fleet_evaluate.device_windows(forecaster, data, np.arange(len(data.datasets["test"]))[-256:])[0]  # rank zero's own
    metrics |= {f"inference/ms_per_window_b{b}": ms for b, ms in evaluate.latency_ms(forecaster, inputs).items()}
    metrics["memory/peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # this process so far
    if torch.cuda.is_available() and forecaster.device.type == "cuda":
        metrics["memory/cuda_peak_mb"] = torch.cuda.max_memory_allocated(forecaster.device) / 2**20
    mlflow.log_metrics(tracking.finite(metrics, "the trained model on the test span"))
    mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
    mlflow.log_dict({**report.to_dict(), "windows": windows}, "data_report.json")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if fleet is None:
            actual = data.frame[data.targets].to_numpy()
            title = f"{module.architecture} on {data.name}: test forecasts (every {data.horizon}-step window)"
            plot = plot_test_forecasts(
                data.frame.index,
                actual,
                test.origins,
                test.pred,
                data.targets,
                title,
                tmp / "forecast_test.png",
                test.quantiles,
                test.levels,
            )
            mlflow.log_artifact(plot, "plots")
            log_evaluation(tmp, data, test)
        else:
            fleet_evaluate.log_fleet_evaluation(tmp, data, test, f"{module.architecture} on {data.name}")

        forecaster.net.cpu()
        bundle = forecaster.save(tmp / "model.pt")
        if fleet is None:
            last = int(test.origins[-1])
            example = data.frame.iloc[last - data.lookback : last][data.inputs].reset_index()
        else:  # the last test input of the last devices, in data units
            example = test.example_input
        example["timestamp"] = example["timestamp"].astype(str)  # as read from a CSV or sent as JSON
        served = ForecastPyfunc()
        served.forecaster = forecaster
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(forecast.__file__).parent / "served_model.py"),
            artifacts={"bundle": str(bundle)},
            code_paths=[str(Path(forecast.__file__).parent)],
            input_example=example,
            # outputs only: the model checks its input itself (pyfunc.py), so MLflow's schema errors never answer for it
            signature=ModelSignature(outputs=infer_signature(example, served.predict(None, example)).outputs),
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}", "pandas", "numpy"],
            registered_model_name=cfg.tracking.register or None,
        )
    if cfg.tracking.register:
        mlflow.set_tag("registered_model", f"{cfg.tracking.register}/{info.registered_model_version}")
        print(f"registered {cfg.tracking.register} version {info.registered_model_version}")
    return metrics


def log_evaluation(tmp: Path, data, test: evaluate.TestForecasts) -> None:
    """Per-step and per-window test errors and one example window, as `evaluation/` artifacts.

    A comparison report is rebuilt from these alone: errors by horizon step, the per-window losses
    its paired test compares, and the last test window's forecast against the actual values.
    """
    by_step, by_window = evaluate.breakdown(test)
    steps = pd.DataFrame({"step": np.arange(1, data.horizon + 1), **by_step})
    windows = pd.DataFrame(by_window)
    windows.insert(1, "timestamp", data.frame.index[windows["origin"]])
    last = int(test.origins[-1])
    example = data.frame.iloc[last - data.lookback : last + data.horizon][data.targets].reset_index()
    for k, name in enumerate(data.targets):
        example[f"{name}:forecast"] = np.concatenate([np.full(data.lookback, np.nan), test.pred[-1, :, k]])
        for j, q in enumerate(test.levels):  # quantiles: `<target>:forecast:q<level>`
            example[f"{name}:forecast:q{label(q)}"] = np.concatenate([np.full(data.lookback, np.nan), test.quantiles[-1, :, k, j]])
    for frame, name in ((steps, "test_by_step.parquet"), (windows, "test_by_window.parquet"), (example, "example_window.parquet")):
        frame.to_parquet(tmp / name, index=False)
        mlflow.log_artifact(str(tmp / name), "evaluation")


def recent(origins: np.ndarray, share: float, at_least: int = 1) -> np.ndarray:
    """The most recent `share` of the windows, and at least `at_least` of them (or all there are)."""
    return origins[max(0, len(origins) - max(at_least, round(len(origins) * share), 1)) :]


def warm_start(net: torch.nn.Module, model_uri: str) -> None:
    """Start from a logged forecast model's weights when its network has the same shapes; else from scratch."""
    mlflow.set_tracking_uri(tracking.tracking_uri())  # every rank loads it, not only the one that records
    source, target = load_model(model_uri)[1].net.state_dict(), net.state_dict()
    if source.keys() != target.keys() or any(source[k].shape != target[k].shape for k in source):
        print(f"init_from {model_uri}: its network differs from this one; training from scratch")
        return
    net.load_state_dict(source)
    print(f"init_from {model_uri}: starting from its weights")


def say(*lines: str) -> None:
    if tracking.is_rank_zero():
        for line in lines:
            print(line)
