"""How fast networks train on this machine, measured so that other work on it cancels out.

A comparison's epoch times come from trainings that ran minutes apart; on a shared machine the
load in those minutes differs, and the ratio of two epoch times measures the load as much as the
networks (23.6 ± 16.5 s against 11.1 ± 6.9 s per epoch, a ratio of 2.1, where the quiet ratio was
1.03). Here the networks' training steps (forward, backward, AdamW update) run interleaved on the
same batch, one step of each per round, so a load that comes and goes slows them alike; each
round gives one ratio, and the verdict reads their median and interquartile range (IQR):

    python -m forecast.speed <comparison run id>     # (re)measure a comparison's networks, log speed.json

`use_threads` applies the `threads` setting (conf/train.yaml) that keeps training fast when
another process takes a core (python -m benchmarks contention).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from torch import nn

from forecast import pyfunc, tracking
from forecast.errors import InputError, reported

PAIRS = 30  # timed rounds: one step of every network per round
WARMUP = 3  # untimed rounds first (allocations, first-call dispatch)


def use_threads(threads: int | None) -> None:
    """Run torch's operations on `threads` threads in this process; None keeps torch's default (one per core)."""
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputError(
            f"threads={threads!r}: give a positive number of threads (1 is robust on a shared machine) "
            "or threads=null for torch's default of one per core"
        )
    torch.set_num_threads(threads)


def trainable(net: nn.Module) -> bool:
    """Whether the network has anything to train (baselines such as last_value have no parameters)."""
    return any(p.requires_grad for p in net.parameters())


def training_step(net: nn.Module, x: torch.Tensor, y: torch.Tensor, clip: float | None = 1.0) -> Callable[[], None]:
    """One AdamW training step of `net` on the batch x [B, L, C] -> y [B, H, T], as a call that repeats it.

    L1 loss (the default model.loss) and gradient-norm clipping at `clip` (trainer.gradient_clip_val),
    as a Lightning training step does them.
    """
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.l1_loss(net(x), y).backward()
        if clip:
            nn.utils.clip_grad_norm_(net.parameters(), clip)
        optimizer.step()

    return step


def interleaved(
    steps: dict[str, Callable[[], None]], pairs: int = PAIRS, warmup: int = WARMUP, clock: Callable[[], float] = time.perf_counter
) -> dict[str, list[float]]:
    """Wall seconds of each step, one of each per round; the order turns every round (A B, B A, ...)
    so that neither network always runs just after the other."""
    names = list(steps)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(warmup + pairs):
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            start = clock()
            steps[name]()
            if i >= warmup:
                times[name].append(clock() - start)
    return times


def ratio_spread(times_a: list[float], times_b: list[float]) -> dict[str, float]:
    """a's step time / b's, round by round: median, quartiles, and each network's median step in ms."""
    ratios = np.asarray(times_a) / np.asarray(times_b)
    q25, median, q75 = np.percentile(ratios, [25, 50, 75])
    return {
        "ratio": float(median),
        "ratio_q25": float(q25),
        "ratio_q75": float(q75),
        "rounds": len(ratios),
        "a_ms": 1000 * statistics.median(times_a),
        "b_ms": 1000 * statistics.median(times_b),
    }


def verdict(a: str, b: str, spread: dict[str, float], label: Callable[[str], str] = str) -> str:
    """The speed clause of a comparison's verdict, from `ratio_spread` of a against b.

    A difference is claimed only when the interquartile range of the per-round ratios excludes 1, that is
    when the same network was the faster in at least three rounds out of four; a smaller difference is
    one the round-to-round noise of this machine could explain.
    """
    r, low, high = spread["ratio"], spread["ratio_q25"], spread["ratio_q75"]
    if low <= 1 <= high:
        return (
            f"no difference in training speed is measurable on this machine "
            f"({label(a)} / {label(b)} step time {r:.2f}, IQR {low:.2f}-{high:.2f})"
        )
    if r > 1:
        return f"the {label(b)} trains {r:.2f}x faster per step than the {label(a)} on this machine (IQR {low:.2f}-{high:.2f})"
    return f"the {label(a)} trains {1 / r:.2f}x faster per step than the {label(b)} on this machine (IQR {1 / high:.2f}-{1 / low:.2f})"


def measure(nets: dict[str, nn.Module], batch: int, lookback: int, n_inputs: int, pairs: int = PAIRS) -> dict:
    """Time the trainable networks' steps interleaved on one random batch of `batch` standardised windows
    [batch, lookback, n_inputs]; every network maps it to the same [B, H, T].

    Returns {"step_ms": {name: median ms}, "times": {name: [s, ...]}, "untrainable": [names]}.
    """
    torch.manual_seed(0)
    x = torch.randn(batch, lookback, n_inputs)  # [B, L, C]
    with torch.no_grad():
        y = torch.randn_like(next(iter(nets.values())).eval()(x))  # [B, H, T]
    steps = {name: training_step(net, x, y) for name, net in nets.items() if trainable(net)}
    times = interleaved(steps, pairs) if steps else {}
    return {
        "step_ms": {name: 1000 * statistics.median(t) for name, t in times.items()},
        "times": times,
        "untrainable": [name for name in nets if name not in steps],
    }


# ---- a comparison's networks, from MLflow -------------------------------------------------------------


def measure_comparison(parent_id: str, pairs: int = PAIRS) -> dict:
    """Time the networks a comparison trained, condition by condition, and log the result to its parent run as
    `speed.json`: {"conditions": {condition: measure(...)}, "protocol": ..., "threads": ...}; the report reads
    the per-round times from it and forms the ratio of any two networks (`ratio_spread`).

    One child per (condition, architecture) is rebuilt from its logged model: the seeds share their shapes.
    """
    client = MlflowClient(tracking.tracking_uri())
    mlflow.set_tracking_uri(tracking.tracking_uri())  # where pyfunc.load finds runs:/ models
    parent = tracking.comparison_run(client, parent_id)
    finished = f"tags.mlflow.parentRunId = '{parent_id}' and attributes.status = 'FINISHED'"
    found: dict[str, dict[str, object]] = {}
    for run in client.search_runs([parent.info.experiment_id], finished, order_by=["attributes.start_time ASC"]):
        found.setdefault(run.data.tags.get("condition", "base"), {}).setdefault(run.data.tags["architecture"], run)
    conditions = {}
    for condition, runs in found.items():
        served = {m: pyfunc.load(f"runs:/{run.info.run_id}/model")[1] for m, run in runs.items()}  # each a Forecaster
        first = next(iter(served.values()))
        batch = int(next(iter(runs.values())).data.params.get("data.batch_size", 256))
        conditions[condition] = measure({m: s.net for m, s in served.items()}, batch, first.lookback, len(first.inputs), pairs)
        shown = ", ".join(f"{m} {ms:.1f} ms" for m, ms in conditions[condition]["step_ms"].items())
        print(f"training step ({condition}, median of {pairs}, interleaved): {shown or 'nothing to train'}", flush=True)
    result = {
        "conditions": conditions,
        "threads": torch.get_num_threads(),
        "protocol": (
            f"training steps (forward, L1 loss, backward, gradient clipping at 1, AdamW update) of one child's logged "
            f"network per architecture, on one random batch of data.batch_size windows; {WARMUP} untimed rounds, then "
            f"{pairs} rounds of one step per network, the order turning every round; {torch.get_num_threads()} torch "
            "thread(s); ratios per round, then their median and interquartile range"
        ),
    }
    client.log_dict(parent_id, result, "speed.json")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m forecast.speed", description=__doc__.splitlines()[0])
    parser.add_argument("run_id", help="the comparison's parent run id (python -m forecast.compare printed it)")
    parser.add_argument("--pairs", type=int, default=PAIRS, help="timed rounds (one step of every network per round)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads while timing (as the training's `threads` setting)")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # loading the models: no progress bars
    with reported():
        use_threads(args.threads)
        measure_comparison(args.run_id, args.pairs)
    print(f"logged speed.json to run {args.run_id}; rebuild its report with python -m forecast.report {args.run_id} --log")


if __name__ == "__main__":
    main()
