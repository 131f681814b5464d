"""python -m benchmarks peers: our GRU and LSTM against Darts and NeuralForecast on ETTh1, side by side.

Every tool gets the same data, the same network budget and the same scoring; each (tool, cell,
budget) trains in its own process, so its peak RSS is its own. Then benchmarks/results/peers.json
(one row per process) and peers.md (the table, with fit time and MSE as ratios to our row).

    python -m benchmarks peers                                  # everything: about 25 min on 2 quiet CPU cores
    python -m benchmarks peers --tools forecast,darts --budgets 3ep
    python -m benchmarks peers --data /elsewhere/ETTh1.csv
    python -m benchmarks peers --quantiles --tools forecast,neuralforecast --cells gru,lstm,deepar --budgets 3ep

With --quantiles every tool forecasts the quantile levels of `benchmarks.quantiles.LEVELS`: ours with
`model.quantiles` (pinball loss, calibrated on the validation span), NeuralForecast's GRU and LSTM with
MQLoss on the same levels and its DeepAR (cell `deepar`: an LSTM with a Student-t head, quantiles
from sampled paths); Darts is left out. The rows add the scaled CRPS and the coverage of the 80% and
95% central intervals over every test window, all scored by `forecast.scoring.score_quantiles`;
results go to peers-quantiles.json / .md (a subset of the budgets: peers-quantiles-3ep.json, ...).

Protocol: ETTh1 (default `../shared/data/ETTh1.csv` from the repo root), the standard long-term
protocol of ../shared/data/README.md: train rows [0, 8640), validation [8640 - L, 11520), test
[11520 - L, 14400), one standard scaler per column fitted on the training rows, all 7 channels in
and out, MSE and MAE on the scaled values over all 2785 test windows (stride 1). The peers' metrics
are computed here from their forecasts, by the code that also scores a `repeat` row (the last value;
1.2944 / 0.7132 under this protocol), so a reader can check the scoring; ours are read from the
MLflow run of `python -m forecast.train`, which scores the same windows the same way.

Budget: L = H = 96, hidden 64 x 2 layers, batch 256, and either
- `3ep`: 3 epochs (NeuralForecast, which trains on single-channel windows in steps: the steps that
  show it as many windows, see `nf_steps`); peers train without validation;
- `best`: early stopping on the validation span, the best validation checkpoint restored, at the
  caps of BEST (peers) and OURS (us).
Peers use Adam at lr 1e-3 and their default losses (Darts MSE, NeuralForecast MAE); we use our own
defaults (our lr, schedule and loss) with only the overrides in OURS, and always validate each epoch
and restore the best epoch, also at 3 epochs. Fit time includes each tool's validation passes;
windows per second are training windows (of all 7 channels) shown per second of fit. Predict time is
forecasting all 2785 test windows with the fitted model. Every tool runs at torch's default thread
count. Darts and NeuralForecast come with the `bench` extra (`pip install -e '.[bench]'`); a tool
that is not installed is skipped with a reason.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.quantiles import LEVELS

ROOT = Path(__file__).resolve().parents[1]
# Our side: python -m forecast.train data=etth1 model=<cell> <these>, per budget. Our own defaults
# (lr, schedule, loss, patience 5) hold for everything not named here.
OURS = {
    "3ep": [
        "data.lookback=96",
        "data.horizon=96",
        "model.hidden_size=64",
        "model.num_layers=2",
        "data.batch_size=256",
        "trainer.max_epochs=3",
    ],
    "best": [
        "data.lookback=96",
        "data.horizon=96",
        "model.hidden_size=64",
        "model.num_layers=2",
        "data.batch_size=256",
        "trainer.max_epochs=20",
    ],
}
# A second row of ours at 3ep: a recipe for short budgets (a higher lr, shorter segments, no dropout),
# chosen on validation loss at this budget; our defaults are tuned for training to convergence.
SHORT = ["model.lr=0.01", "model.segment_len=24", "model.dropout=0"]
L = H = 96
HIDDEN, LAYERS, BATCH, EPOCHS, LR, SEED = 64, 2, 256, 3, 1e-3, 0
# The peers' "best": (epoch cap, patience in epochs). Darts gets ours (20, 5). NeuralForecast takes
# ~33 s an epoch here plus a validation pass as long as its test forecast, so it gets less room, to
# keep the whole run near 25 minutes; a row that hit its cap says so in the table.
BEST = {"darts": (20, 5), "neuralforecast": (12, 3)}
TOOLS, CELLS, BUDGETS = ("forecast", "darts", "neuralforecast"), ("gru", "lstm", "deepar"), ("3ep", "best")
BORDERS = (8640, 11520, 14400)  # train end, validation end, test end
CHANNELS = 7
TRAIN_WINDOWS = BORDERS[0] - L - H + 1  # 8449 (of 7 channels each)
TEST_WINDOWS = BORDERS[2] - BORDERS[1] - H + 1  # 2785
MARK = "peers-row: "  # prefixes a child's result line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks peers", description=__doc__.splitlines()[0])
    parser.add_argument("--tools", default=",".join(TOOLS), help=f"a comma-separated subset of {','.join(TOOLS)}")
    parser.add_argument("--cells", default="gru,lstm", help=f"of {','.join(CELLS)} (deepar: NeuralForecast's, with --quantiles)")
    parser.add_argument("--quantiles", action="store_true", help="quantile forecasts, scored by CRPS and coverage")
    parser.add_argument("--budgets", default=",".join(BUDGETS), help=f"of {','.join(BUDGETS)}")
    parser.add_argument(
        "--data",
        type=Path,
        default=ROOT.parent / "shared" / "data" / "ETTh1.csv",
        help="ETTh1.csv (default ../shared/data/ETTh1.csv from the repo root)",
    )
    parser.add_argument("--epochs", type=int, help=argparse.SUPPRESS)  # smoke runs: cap every budget
    parser.add_argument("--one", nargs=3, metavar=("TOOL", "CELL", "BUDGET"), help=argparse.SUPPRESS)  # a child
    args = parser.parse_args(argv)
    if not args.data.is_file():
        sys.exit(f"error: {args.data} not found; pass --data path/to/ETTh1.csv (see ../shared/data/README.md)")
    if args.one:
        print(MARK + json.dumps(peer(*args.one, args.data, args.epochs, args.quantiles)), flush=True)
        return
    choice = [text.split(",") for text in (args.tools, args.cells, args.budgets)]
    for names, known in zip(choice, (TOOLS, CELLS, BUDGETS)):
        if set(names) - set(known):
            parser.error(f"unknown {', '.join(sorted(set(names) - set(known)))}; choose from {','.join(known)}")
    run_all(args, *choice, command=shlex.join(["python", "-m", "benchmarks", "peers", *(argv or [])]))


def run_all(args, tools: list[str], cells: list[str], budgets: list[str], command: str) -> None:
    # here, not at the top: MLflow would add to a child's peak RSS
    from benchmarks.sweep import machine, write

    common = {"machine": machine(), "command": command, "protocol": "ETTh1 standard, L=H=96, 2785 test windows, scaled"}
    scaled, _ = load(args.data)
    rows = [{**common, "tool": "repeat", "cell": "-", "budget": "-", "recipe": "-", **score(repeat(scaled), test_truth(scaled))}]
    failed = []
    quantile_args = [f"model.quantiles=[{','.join(f'{q:g}' for q in LEVELS)}]"] if args.quantiles else []
    for tool in tools:
        if tool != "forecast" and importlib.util.find_spec(tool) is None:
            print(f"skipped {tool}: not installed (pip install -e '.[bench]')", flush=True)
            continue
        if tool == "darts" and args.quantiles:
            print("skipped darts: the quantile comparison is with NeuralForecast's MQLoss and DeepAR", flush=True)
            continue
        for cell in cells:
            if cell == "deepar" and (tool != "neuralforecast" or not args.quantiles):
                print(f"skipped {tool} deepar: DeepAR is NeuralForecast's, and only with --quantiles", flush=True)
                continue
            for budget in budgets:
                recipes = ("defaults", "short") if (tool, budget) == ("forecast", "3ep") and not args.quantiles else ("defaults",)
                for recipe in recipes:
                    print(f"--- {tool} {cell} {budget} {recipe}", flush=True)
                    row = (
                        ours(cell, budget, args.data, args.epochs, (SHORT if recipe == "short" else []) + quantile_args)
                        if tool == "forecast"
                        else child(tool, cell, budget, args.data, args.epochs, args.quantiles)
                    )
                    if row is None:
                        failed.append(f"{tool} {cell} {budget} {recipe}")
                    else:
                        rows.append({**common, "tool": tool, "cell": cell, "budget": budget, "recipe": recipe, **row})
    for r in rows:
        us = next(
            (
                u
                for u in rows
                if u["tool"] == "forecast" and u["recipe"] == "defaults" and (u["cell"], u["budget"]) == (r["cell"], r["budget"])
            ),
            None,
        )
        r |= {"fit_vs_ours": r["fit_s"] / us["fit_s"], "mse_vs_ours": r["mse"] / us["mse"]} if us else {}
    name = ("peers-quantiles" if args.quantiles else "peers") + ("" if tuple(budgets) == BUDGETS else "-" + "-".join(budgets))
    write(name, rows, table(rows, common["machine"], command, args.epochs, args.quantiles))
    if failed:
        sys.exit(f"error: failed, left out of the table: {', '.join(failed)} (their output is above)")


# --- data and scoring, the same for every tool


def load(path: Path):
    """ETTh1 rows [0, 14400): the 7 channels standardised by the training rows (forecast's own
    Scaler: population std, as sklearn's StandardScaler), float32 [14400, 7], and their hourly timestamps."""
    import pandas as pd

    from forecast.windows import Scaler

    frame = pd.read_csv(path, index_col="date", parse_dates=True).iloc[: BORDERS[2]]
    values = frame.to_numpy(np.float64)
    return Scaler.fit(values[: BORDERS[0]]).transform(values, np.float32), pd.DatetimeIndex(frame.index, freq="h")


def test_truth(scaled: np.ndarray) -> np.ndarray:
    """[2785, H, 7]: the targets of every test window; window i forecasts rows 11520 + i onwards."""
    return np.lib.stride_tricks.sliding_window_view(scaled[BORDERS[1] :], H, axis=0).transpose(0, 2, 1)


def repeat(scaled: np.ndarray) -> np.ndarray:
    """The last input value of every test window, repeated over the horizon."""
    last = scaled[BORDERS[1] - 1 : BORDERS[1] - 1 + TEST_WINDOWS]
    return np.broadcast_to(last[:, None, :], (TEST_WINDOWS, H, CHANNELS))


def score(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Scaled MSE and MAE by `forecast.scoring.score`, the function that scores our own runs (on values already scaled).

    Quantile forecasts [N, H, 7, Q] at LEVELS: MSE and MAE of the median, and CRPS and coverage by
    `forecast.scoring.score_quantiles`.
    """
    from forecast import scoring

    assert true.shape == (TEST_WINDOWS, H, CHANNELS) and pred.shape[:3] == true.shape, (pred.shape, true.shape)
    if pred.ndim == 4:
        bands = scoring.score_quantiles(np.sort(pred.astype(np.float64), axis=-1), LEVELS, true, np.ones(CHANNELS))
        pred = pred[..., LEVELS.index(0.5)]
    else:
        bands = {}
    scores = scoring.score(pred.astype(np.float64), true, np.ones(CHANNELS))
    return {
        "mse": scores["mse_scaled"],
        "mae": scores["mae_scaled"],
        **{k: bands[k] for k in ("crps", "coverage_80", "coverage_95") if k in bands},
    }


# --- our tool: python -m forecast.train, read back from its MLflow run


def ours(cell: str, budget: str, data: Path, epochs: int | None, recipe: list[str]) -> dict | None:
    overrides = [f"model={cell}", "data=etth1", f"data.path={data.resolve()}", *OURS[budget], *recipe]
    if epochs:
        overrides = [o for o in overrides if not o.startswith("trainer.max_epochs=")] + [f"trainer.max_epochs={epochs}"]
    with tempfile.TemporaryDirectory() as tmp:  # its store, artifacts and Hydra outputs: nothing lands in the repo
        uri = f"sqlite:///{tmp}/mlflow.db"
        command = [sys.executable, "-m", "forecast.train", *overrides, "tracking.experiment=peers", f"hydra.run.dir={tmp}/outputs"]
        print("$", shlex.join(["python", *command[1:]]), flush=True)
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true"}
        if subprocess.run(command, check=False, cwd=tmp, env=env).returncode != 0:
            return None
        from mlflow import MlflowClient

        client = MlflowClient(uri)
        run = client.search_runs([client.get_experiment_by_name("peers").experiment_id])[0]
        m = run.data.metrics
        trained = len(client.get_metric_history(run.info.run_id, "val/loss"))  # one value per epoch
        capped = budget == "best" and trained >= int(run.data.params["trainer.max_epochs"])
        return {
            "epochs": trained,
            "capped": capped,
            "fit_s": m["time/fit_s"],
            "train_windows_per_s": trained * TRAIN_WINDOWS / m["time/fit_s"],
            "peak_rss_mb": m["memory/peak_rss_mb"],
            "predict_s": m["time/predict_s"],
            "mse": m["test/mse_scaled"],
            "mae": m["test/mae_scaled"],
            **{k.removeprefix("test/"): m[k] for k in ("test/crps", "test/coverage_80", "test/coverage_95") if k in m},
            "params": int(m["model/params"]),
            "process": shown(command, data),
        }


# --- the peers, each in a child process: python -m benchmarks.peers --one <tool> <cell> <budget>


def child(tool: str, cell: str, budget: str, data: Path, epochs: int | None, quantiles: bool = False) -> dict | None:
    command = [sys.executable, "-m", "benchmarks.peers", "--one", tool, cell, budget, "--data", str(data.resolve())]
    command += ["--epochs", str(epochs)] if epochs else []
    command += ["--quantiles"] if quantiles else []
    done = subprocess.run(
        command, check=False, cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    )
    found = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
    if done.returncode != 0 or not found:
        print(done.stdout, end="")
        return None
    return {**json.loads(found[-1].removeprefix(MARK)), "process": shown(command, data)}


def shown(command: list[str], data: Path) -> str:
    """The command as typed from the repository root: the data path relative to it, no temp folder (no path of this machine)."""
    here, relative = str(data.resolve()), os.path.relpath(data.resolve(), ROOT)
    args = [a.replace(here, relative) for a in command[1:] if not a.startswith("hydra.run.dir=")]
    return shlex.join(["python", *args])


def peer(tool: str, cell: str, budget: str, data: Path, epochs: int | None, quantiles: bool = False) -> dict:
    """Fit one peer, forecast every test window, score it; runs in its own process."""
    scaled, times = load(data)
    fit = {"darts": fit_darts, "neuralforecast": fit_nf}[tool]
    fitted = fit(scaled, times, cell, budget, epochs, quantiles) if tool == "neuralforecast" else fit(scaled, times, cell, budget, epochs)
    pred = fitted.pop("pred")
    return {
        **fitted,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # kB on Linux
        **score(pred, test_truth(scaled)),
    }


def fit_darts(scaled: np.ndarray, times, cell: str, budget: str, epochs: int | None) -> dict:
    from darts import TimeSeries
    from darts.models import BlockRNNModel
    from pytorch_lightning.callbacks import EarlyStopping

    series = TimeSeries.from_times_and_values(times, scaled)
    train, val, test = series[: BORDERS[0]], series[BORDERS[0] - L : BORDERS[1]], series[BORDERS[1] - L :]
    early = budget == "best"
    cap, patience = BEST["darts"] if early else (EPOCHS, 0)
    callbacks = [EarlyStopping("val_loss", patience=patience)] if early else []
    with tempfile.TemporaryDirectory() as work:
        model = BlockRNNModel(
            model=cell.upper(),
            input_chunk_length=L,
            output_chunk_length=H,
            hidden_dim=HIDDEN,
            n_rnn_layers=LAYERS,
            batch_size=BATCH,
            n_epochs=epochs or cap,
            optimizer_kwargs={"lr": LR},
            random_state=SEED,
            save_checkpoints=early,
            work_dir=work,
            model_name="peers",
            force_reset=True,
            pl_trainer_kwargs={"enable_progress_bar": False, "logger": False, "callbacks": callbacks},
        )
        started = time.perf_counter()
        model.fit(train, val_series=val if early else None, verbose=False)
        trained = model.epochs_trained
        if early:  # Darts' own way back to the best validation epoch
            model = BlockRNNModel.load_from_checkpoint("peers", work_dir=work, best=True)
        fit_s = time.perf_counter() - started
    started = time.perf_counter()
    forecasts = model.historical_forecasts(test, forecast_horizon=H, stride=1, retrain=False, last_points_only=False, verbose=False)
    predict_s = time.perf_counter() - started
    assert len(forecasts) == TEST_WINDOWS and forecasts[0].start_time() == times[BORDERS[1]], "Darts: test windows misaligned"
    return {
        "epochs": trained,
        "capped": early and trained >= (epochs or cap),
        "fit_s": fit_s,
        "train_windows_per_s": trained * TRAIN_WINDOWS / fit_s,
        "predict_s": predict_s,
        "params": sum(p.numel() for p in model.model.parameters()),
        "pred": np.stack([f.values() for f in forecasts]),
    }


def nf_steps(epochs: float) -> int:
    """NeuralForecast steps that show the network `epochs` passes over our training windows.

    Each channel is its own series, and a step samples BATCH single-channel windows; an epoch of
    ours shows TRAIN_WINDOWS windows of 7 channels, i.e. 7 x 8449 = 59,143 single-channel windows:
    59,143 / 256 = 231 steps an epoch, 693 for 3 epochs.
    """
    return round(epochs * CHANNELS * TRAIN_WINDOWS / BATCH)


def fit_nf(scaled: np.ndarray, times, cell: str, budget: str, epochs: int | None, quantiles: bool = False) -> dict:
    """NeuralForecast's GRU or LSTM (MAE; with `quantiles` MQLoss on LEVELS), or its DeepAR (Student-t; quantiles at LEVELS)."""
    import pandas as pd
    import torch
    from neuralforecast.losses.pytorch import DistributionLoss, MQLoss
    from neuralforecast.models import GRU, LSTM, DeepAR
    from neuralforecast.tsdataset import TimeSeriesDataset
    from pytorch_lightning.callbacks import ModelCheckpoint

    def dataset(stop: int):  # rows [0, stop), long format: one series per channel
        frame = pd.DataFrame(
            {"unique_id": np.repeat(np.arange(CHANNELS), stop), "ds": np.tile(times[:stop], CHANNELS), "y": scaled[:stop].T.reshape(-1)}
        )
        return TimeSeriesDataset.from_df(frame)[0]

    early = budget == "best"
    cap, patience = BEST["neuralforecast"] if early else (EPOCHS, -1)
    with tempfile.TemporaryDirectory() as work:
        best = ModelCheckpoint(dirpath=work, monitor="ptl/val_loss")
        if cell == "deepar":
            network = {
                "lstm_hidden_size": HIDDEN,
                "lstm_n_layers": LAYERS,
                "loss": DistributionLoss(distribution="StudentT", quantiles=LEVELS),
            }
        else:
            network = {"encoder_hidden_size": HIDDEN, "encoder_n_layers": LAYERS} | (
                {"loss": MQLoss(quantiles=LEVELS)} if quantiles else {}
            )
        model = {"gru": GRU, "lstm": LSTM, "deepar": DeepAR}[cell](
            h=H,
            input_size=L,
            **network,
            windows_batch_size=BATCH,
            max_steps=nf_steps(epochs or cap),
            learning_rate=LR,
            random_seed=SEED,
            val_check_steps=nf_steps(1) if early else nf_steps(epochs or cap),  # validate once an epoch
            early_stop_patience_steps=patience,  # counted in validations
            training_data_availability_threshold=1.0,  # train only on windows inside the training rows, as the others do
            enable_progress_bar=False,
            logger=False,
            enable_checkpointing=early,
            default_root_dir=work,
            callbacks=[best] if early else [],
        )
        started = time.perf_counter()
        if early:  # the last 2880 rows are the validation targets
            model.fit(dataset(BORDERS[1]), val_size=BORDERS[1] - BORDERS[0])
            model.load_state_dict(torch.load(best.best_model_path, weights_only=False)["state_dict"])
        else:
            model.fit(dataset(BORDERS[0]))
        fit_s = time.perf_counter() - started
    test = dataset(BORDERS[2])
    model.set_test_size(BORDERS[2] - BORDERS[1])  # forecasts whose targets are the last 2880 rows
    started = time.perf_counter()
    out = model.predict(test, step_size=1)  # [rows] or [rows, outputs]: MQLoss the levels, DeepAR its mean then the levels
    predict_s = time.perf_counter() - started
    if out.ndim == 2 and out.shape[1] > 1:
        out = out[:, -len(LEVELS) :].reshape(CHANNELS, TEST_WINDOWS, H, len(LEVELS)).transpose(1, 2, 0, 3)  # [N, H, 7, Q]
    else:
        out = out.reshape(CHANNELS, TEST_WINDOWS, H).transpose(1, 2, 0)  # rows: series, window, step
    steps = len(model.train_trajectories)
    seen = steps * BATCH / CHANNELS  # in windows of 7 channels, as the others count them
    return {
        "epochs": round(seen / TRAIN_WINDOWS, 2),
        "capped": early and steps >= nf_steps(epochs or cap),
        "fit_s": fit_s,
        "train_windows_per_s": seen / fit_s,
        "predict_s": predict_s,
        "params": sum(p.numel() for p in model.parameters()),
        "pred": out,
    }


# --- the table


def table(rows: list[dict], machine: str, command: str, epochs: int | None, quantiles: bool = False) -> str:
    def ratio(v: float | None) -> str:
        return f"{v:.2f}" if v is not None else ""

    (darts_cap, darts_patience), (nf_cap, nf_patience) = BEST["darts"], BEST["neuralforecast"]
    lines = [
        f"Our GRU and LSTM against Darts {version('darts')} (BlockRNNModel) and NeuralForecast {version('neuralforecast')} "
        f"(GRU, LSTM; each channel its own series) on ETTh1. Machine: {machine}. Command: `{command}`."
        + (f" **Smoke run: every budget capped at {epochs} epochs; not a result.**" if epochs else ""),
        "",
        (
            f"- Protocol (the standard one): train rows [0, 8640), validation [8640 - L, 11520), test [11520 - L, 14400); one "
            f"scaler per column fitted on the training rows; all 7 channels in and out; MSE / MAE on the scaled values over all "
            f"{TEST_WINDOWS} test windows. The peers are scored here by the code that scores `repeat` (the last value, "
            f"1.2944 / 0.7132 expected); ours are read from its MLflow run."
        ),
        (
            f"- Budget, every tool: L = H = {L}, hidden {HIDDEN} x {LAYERS} layers, batch {BATCH}. `3ep`: {EPOCHS} epochs "
            f"(NeuralForecast: {nf_steps(EPOCHS)} steps of {BATCH} single-channel windows, as many windows as {EPOCHS} x {CHANNELS} x "
            f"{TRAIN_WINDOWS:,}). `best`: early stopping on the validation span, the best validation epoch restored; caps: "
            f"Darts {darts_cap} epochs, patience {darts_patience}; NeuralForecast {nf_cap} epochs' worth of steps, patience "
            f"{nf_patience} (validated once an epoch's worth); ours `trainer.max_epochs` and `patience` (5 unless "
            f"overridden) as in its overrides below. "
            f'"(cap)" marks a run that stopped at its cap.'
        ),
        (
            f"- Peers: Adam lr {LR}, their default losses (Darts MSE, NeuralForecast MAE) and other defaults; no validation at "
            f"`3ep`. Ours: its own defaults (lr, schedule, loss) with only these overrides: `3ep` `{' '.join(OURS['3ep'])}`; "
            f"`best` `{' '.join(OURS['best'])}`. It validates every epoch and restores the best one at `3ep` too. "
            f"`forecast (short)` adds a recipe for short budgets, `{' '.join(SHORT)}`, chosen on validation loss at `3ep`."
        ),
        (
            f"- Each (tool, cell, budget) in its own process at torch's default thread count. fit s includes validation (and "
            f"reloading the best checkpoint); windows / s: training windows of 7 channels per second of fit; peak RSS: the "
            f"process's ru_maxrss; predict s: forecasting all {TEST_WINDOWS} test windows with the fitted model; "
            f"fit / ours and MSE / ours: against our row of the same cell and budget."
        ),
        "",
        "| tool | cell | budget | epochs | fit s | fit / ours | windows / s | peak RSS MB | predict s | MSE | MSE / ours | MAE | params |"
        + (" CRPS | cov. 80 | cov. 95 |" if quantiles else ""),
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" * 3 if quantiles else ""),
    ]
    if quantiles:
        lines[2:2] = [
            (
                f"- Quantiles: every tool forecasts the levels {', '.join(f'{q:g}' for q in LEVELS)}: ours with `model.quantiles` "
                f"(pinball loss, split-conformal calibration on the validation span), NeuralForecast's GRU and LSTM with MQLoss, "
                f"its DeepAR (an LSTM with a Student-t head; quantiles of sampled paths). MSE / MAE: of the median; CRPS "
                f"(`forecast.scoring.score_quantiles`, a point forecast's is its MAE) and the coverage of the 80% and 95% "
                f"central intervals over every test window, all scored here alike."
            ),
            "",
        ]
    for r in sorted(rows, key=lambda r: (r["budget"], r["cell"], TOOLS.index(r["tool"]) if r["tool"] in TOOLS else -1, r["recipe"])):
        if r["tool"] == "repeat":
            lines.append(
                f"| repeat | - | - | | | | | | | {r['mse']:.4f} | | {r['mae']:.4f} | |" + (f" {r['mae']:.4f} | | |" if quantiles else "")
            )
            continue
        tool = r["tool"] + (" (short)" if r.get("recipe") == "short" else "")
        lines.append(
            f"| {tool} | {r['cell']} | {r['budget']} | {r['epochs']:g}{' (cap)' if r['capped'] else ''} | "
            f"{r['fit_s']:.1f} | {ratio(r.get('fit_vs_ours'))} | {r['train_windows_per_s']:,.0f} | {r['peak_rss_mb']:,.0f} | "
            f"{r['predict_s']:.2f} | {r['mse']:.4f} | {ratio(r.get('mse_vs_ours'))} | {r['mae']:.4f} | {r['params']:,} |"
            + (f" {r['crps']:.4f} | {r['coverage_80']:.3f} | {r['coverage_95']:.3f} |" if quantiles else "")
        )
    return "\n".join(lines)


def version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed(package)
    except PackageNotFoundError:
        return "(not installed)"


if __name__ == "__main__":
    main(sys.argv[1:])
