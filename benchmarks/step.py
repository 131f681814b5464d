"""python -m benchmarks step: one training step of the recurrent forecaster against this machine's floor.

The floor of a step is its matrix-product arithmetic done at this machine's best matrix-product
rate. The arithmetic is counted from the network's shapes (below), because torch's own
FlopCounterMode does not see inside the fused CPU LSTM kernel (it reports 0 FLOPs for nn.LSTM);
the rate is measured once with a large float32 product. Training costs three times the forward
products (the backward pass computes two products per forward product: the input's and the
weight's gradients). Element-wise work (gates, activations, the optimiser) is left out of the
floor, so measured / floor >= 1 and shows how far a step is from the hardware.

    python -m benchmarks step                 # the presets' sizes, GRU and LSTM
    python -m benchmarks step --repeats 50
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.sweep import machine, write
from forecast.recurrent import RecurrentNet

# name -> (lookback, horizon, network settings); batch 256 windows of 7 channels (ETTh1)
SIZES = {
    "default L=96": (96, 96, {}),
    "default L=720": (720, 96, {}),
    "budget 64x2 L=96": (96, 96, {"hidden_size": 64, "num_layers": 2}),  # the peers' fixed budget
}
BATCH, CHANNELS = 256, 7


def forward_flops(net: RecurrentNet, batch: int) -> int:
    """Multiply-add FLOPs (2 per multiply-add) of the forward pass's matrix products."""
    d, gates = net.rnn.hidden_size, 3 if net.cell == "gru" else 4
    G, w, S, M = gates * d, net.segment_len, net.n_in_segments, net.n_out_segments
    width = 1 if net.channel_independent else net.n_inputs
    N = batch * (net.n_inputs if net.channel_independent else 1)  # series through the cell
    out = net.head.out_features
    flops = N * S * (w * width) * d  # segment projection
    flops += net.rnn.num_layers * N * S * (d * G + d * G)  # encoder: input and state products
    if net.decoder == "direct":
        flops += N * d * out
    else:
        flops += M * d * G + N * d * G  # layer 1: queries once, state once per series
        flops += (net.rnn.num_layers - 1) * (N * M * d * G + N * d * G)
        flops += N * M * d * out  # head on every output segment
    return 2 * flops


def matmul_rate(n: int = 2048, repeats: int = 10) -> float:
    """Best-case float32 matrix-product rate of this machine, FLOP/s (median of `repeats`)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)


def step_seconds(nets: dict[str, RecurrentNet], lookback: int, horizon: int, repeats: int) -> dict[str, float]:
    """Median wall time of one AdamW training step (forward, backward, update) of each net.

    The nets' steps alternate (one of each per round), so that a machine whose speed drifts
    during the run slows them alike and their ratio stays fair.
    """
    x, y = torch.randn(BATCH, lookback, CHANNELS), torch.randn(BATCH, horizon, CHANNELS)
    steps = {}
    for name, net in nets.items():
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        net.train()

        def step(net=net, opt=opt):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.l1_loss(net(x), y).backward()
            opt.step()

        steps[name] = step
    times = {name: [] for name in nets}
    for i in range(repeats + 3):  # 3 warm-up rounds
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if i >= 3:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks step", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed steps per network (median reported)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rate = matmul_rate()
    measured = {}
    for name, (lookback, horizon, settings) in SIZES.items():
        nets = {cell: RecurrentNet(CHANNELS, list(range(CHANNELS)), lookback, horizon, cell=cell, **settings) for cell in ("gru", "lstm")}
        measured[name] = nets, step_seconds(nets, lookback, horizon, args.repeats)
    rate = max(rate, matmul_rate())  # the better of before and after: the hardware's
    rows = []
    for name, (lookback, horizon, _) in SIZES.items():
        nets, seconds = measured[name]
        for cell, net in nets.items():
            flops = 3 * forward_flops(net, BATCH)
            rows.append(
                {
                    "size": name,
                    "cell": cell,
                    "lookback": lookback,
                    "horizon": horizon,
                    "batch": BATCH,
                    "hidden_size": net.rnn.hidden_size,
                    "num_layers": net.rnn.num_layers,
                    "gflop": flops / 1e9,
                    "step_ms": 1000 * seconds[cell],
                    "floor_ms": 1000 * flops / rate,
                    "ratio": seconds[cell] * rate / flops,
                }
            )
    for row in rows:
        lstm = next(r for r in rows if r["size"] == row["size"] and r["cell"] == "lstm")
        row["vs_lstm"] = row["step_ms"] / lstm["step_ms"]
    lines = [
        (
            f"One training step (batch {BATCH} x {CHANNELS} channels, AdamW) against its floor: matrix-product FLOPs "
            f"at this machine's measured rate of {rate / 1e9:.0f} GFLOP/s ({machine()}); median of {args.repeats} steps, "
            "GRU and LSTM steps alternating."
        ),
        "",
        "| size | cell | GFLOP / step | floor ms | step ms | step / floor | step / LSTM step |",
        "|---|---|---:|---:|---:|---:|---:|",
        *(
            f"| {r['size']} | {r['cell']} | {r['gflop']:.2f} | {r['floor_ms']:.1f} | {r['step_ms']:.1f} | "
            f"{r['ratio']:.2f} | {r['vs_lstm']:.2f} |"
            for r in rows
        ),
    ]
    protocol = (
        f"one AdamW step (L1 loss, forward + backward + update) on random batches of {BATCH} windows x {CHANNELS} "
        f"channels, median of {args.repeats} after 3 warm-up steps; floor = 3 x the forward's matrix-product FLOPs "
        "at the median rate of a 2048 x 2048 float32 product (the better of before and after the steps)"
    )
    for row in rows:
        row |= {
            "machine": machine(),
            "command": "python -m benchmarks step" + "".join(f" {a}" for a in (argv or [])),
            "protocol": protocol,
            "gflop_per_s": rate / 1e9,
        }
    write("step", rows, "\n".join(lines))
