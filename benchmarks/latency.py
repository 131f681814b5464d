"""python -m benchmarks latency: forecast latency of a registered model, one window and a batch of 256.

Protocol. Without --model-uri, a small model is trained on the embedded sample data
(`python -m forecast.train model=<cell> trainer.max_epochs=1 tracking.register=latency-<cell>`, in
a temporary folder with its own SQLite store) and the alias `bench` is pointed at it. The model is
loaded as serving loads it (`forecast.pyfunc.load("models:/latency-<cell>@bench")`, the MLflow
pyfunc) and timed on raw readings drawn around the model's own scaler (values do not change the
work done), in this process on the CPU:

- served: `model.predict(frame)`, the pyfunc as MLflow serves it: L rows of raw readings with
  ISO timestamps in, H rows out (checks, scaling, forecast, timestamps);
- windows: `Forecaster.forecast(raw)`, the pyfunc's batched core ([N, L, C] raw -> [N, H, T] in data
  units), for 1 and 256 windows;
- network: the bare forward of the same scaled float32 batch under torch.no_grad, for contrast.

Each is called `--warmup` times, then timed `--repeats` times; medians are reported.

    python -m benchmarks latency                              # trains a GRU (~1 min), then times it (~30 s)
    python -m benchmarks latency --models gru lstm
    MLFLOW_TRACKING_URI=sqlite:///mlflow.db python -m benchmarks latency --model-uri models:/forecast@champion
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from numpy.lib.stride_tricks import sliding_window_view

BATCH, ALIAS = 256, "bench"


def train(cell: str, folder: Path) -> str:
    """Train and register a small model on the sample data in `folder`; its URI by alias."""
    name = f"latency-{cell}"
    command = [
        sys.executable,
        "-m",
        "forecast.train",
        f"model={cell}",
        "trainer.max_epochs=1",
        f"tracking.register={name}",
        "tracking.experiment=latency",
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"], "MLFLOW_DISABLE_TELEMETRY": "true"}
    print("$ python", shlex.join(command[1:]), flush=True)
    done = subprocess.run(command, check=False, cwd=folder, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"training failed:\n{(done.stdout + done.stderr)[-3000:]}")
    from mlflow import MlflowClient

    client = MlflowClient()
    version = max(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    client.set_registered_model_alias(name, ALIAS, str(version))
    return f"models:/{name}@{ALIAS}"


def inputs(forecaster, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """One window as the served model receives it (a frame) and BATCH raw windows [BATCH, L, C]."""
    rows = forecaster.lookback + BATCH - 1
    values = forecaster.scaler.mean + forecaster.scaler.std * rng.standard_normal((rows, len(forecaster.inputs)))  # [rows, C] raw readings
    frame = pd.DataFrame(values[-forecaster.lookback :], columns=forecaster.inputs)
    stamps = pd.date_range("2025-01-06", periods=rows, freq=forecaster.freq)[-forecaster.lookback :]
    frame.insert(0, "timestamp", stamps.astype(str))  # as read from a CSV
    windows = sliding_window_view(values, forecaster.lookback, axis=0).transpose(0, 2, 1)  # [BATCH, L, C], a view
    return frame, np.ascontiguousarray(windows)


def median_ms(call, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(uri: str, warmup: int, repeats: int) -> list[dict]:
    """Rows for one model: served, windows and network paths at 1 and BATCH windows."""
    from forecast import pyfunc

    model, forecaster = pyfunc.load(uri)
    frame, windows = inputs(forecaster, np.random.default_rng(0))
    scaled = torch.from_numpy(forecaster.scaler.transform(windows, np.float32))

    def forward(x):
        with torch.no_grad():
            return forecaster.net(x)

    paths = [
        ("served: pyfunc predict(frame of L readings)", 1, lambda: model.predict(frame)),
        ("windows: Forecaster.forecast(raw)", 1, lambda: forecaster.forecast(windows[:1])),
        ("windows: Forecaster.forecast(raw)", BATCH, lambda: forecaster.forecast(windows)),
        ("network: forward(scaled), no_grad", 1, lambda: forward(scaled[:1])),
        ("network: forward(scaled), no_grad", BATCH, lambda: forward(scaled)),
    ]
    about = {
        "model_uri": uri,
        "cell": forecaster.net.cell,
        "params": sum(p.numel() for p in forecaster.net.parameters()),
        "lookback": forecaster.lookback,
        "horizon": forecaster.horizon,
        "inputs": len(forecaster.inputs),
        "targets": len(forecaster.targets),
    }
    rows = []
    for path, n, call in paths:
        ms = median_ms(call, warmup, repeats)
        rows.append({**about, "path": path, "windows": n, "ms_per_call": ms, "ms_per_window": ms / n})
        print(f"{forecaster.net.cell} {path} x{n}: {ms:.2f} ms", flush=True)
    return rows


def table(rows: list[dict], warmup: int, repeats: int) -> str:
    from benchmarks.sweep import machine

    models = {r["model_uri"]: r for r in rows}
    described = "; ".join(
        f"`{uri}`: {r['cell']}, {r['params']:,} params, L = {r['lookback']}, H = {r['horizon']}, "
        f"{r['inputs']} inputs -> {r['targets']} targets"
        for uri, r in models.items()
    )
    return "\n".join(
        [
            (
                f"Forecast latency on the CPU ({machine()}, {torch.get_num_threads()} torch threads): {described}. Median of "
                f"{repeats} calls after {warmup} warm-up calls, raw readings drawn around the model's scaler."
            ),
            "",
            "| model | path | windows | ms / call | ms / window |",
            "|---|---|---:|---:|---:|",
            *(f"| {r['cell']} | {r['path']} | {r['windows']} | {r['ms_per_call']:.2f} | {r['ms_per_window']:.3f} |" for r in rows),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks latency", description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", action="append", help="time this logged model instead of training one (repeatable)")
    parser.add_argument("--models", nargs="+", default=["gru"], help="cells to train and time when no --model-uri is given")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    from benchmarks.sweep import machine, write

    command = shlex.join(["python", "-m", "benchmarks", "latency", *(argv if argv is not None else sys.argv[2:])])
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="forecast-latency-") as tmp:
        if not args.model_uri:
            os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        import mlflow

        mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db")
        uris = args.model_uri or [train(cell, Path(tmp)) for cell in args.models]
        rows = [row for uri in uris for row in measure(uri, args.warmup, args.repeats)]
    protocol = (
        f"in-process on the CPU, {torch.get_num_threads()} torch threads; {args.warmup} warm-up calls, median of "
        f"{args.repeats}; model loaded with forecast.pyfunc.load; load average {load:.1f} at the start"
        + ("" if args.model_uri else "; model trained for 1 epoch on the sample data")
    )
    for row in rows:
        row |= {"machine": machine(), "command": command, "protocol": protocol}
    write("latency", rows, table(rows, args.warmup, args.repeats))


if __name__ == "__main__":
    main()
