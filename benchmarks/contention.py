"""python -m benchmarks contention: training epochs on a quiet machine and beside one CPU-bound competitor.

The default training (sample data, default GRU, batch 256) runs its training epochs (forward, loss,
backward, gradient clipping, AdamW; no validation) in one child process per thread setting, all
started at once and idle until told to run an epoch. The parent then goes round the settings:
each runs one quiet epoch, then one beside a competitor (a second process spinning a Python loop,
which keeps one core busy), the next setting likewise, and so on for every round, so that load from
elsewhere on the machine falls on every setting and on both kinds of epoch alike; medians per
kind. A setting's environment variables (OMP_WAIT_POLICY) reach its child before
it imports torch, which is when GNU OpenMP reads them.

    python -m benchmarks contention              # three settings, 3 rounds (2-3 minutes on 2 cores)
    python -m benchmarks contention --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# name -> (environment before torch loads, `threads` setting); the first is torch's own default
SETTINGS = {
    "threads=null (torch's default: one per core), OpenMP spin-waits": ({}, None),
    "threads=null, OMP_WAIT_POLICY=passive (no spin)": ({"OMP_WAIT_POLICY": "passive"}, None),
    "threads=1 (the default now)": ({}, 1),
}
COMPETITOR = [sys.executable, "-c", "while True: pass"]  # one busy core, like another user's job
MAX_EPOCH_S = 8.0  # an epoch slower than this stops early; its time is extrapolated from the steps it did


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks contention", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="quiet and contended epochs per setting (medians reported)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return

    from benchmarks.sweep import machine, write

    load_before, started = os.getloadavg(), time.perf_counter()
    children = {
        name: subprocess.Popen(
            [sys.executable, "-m", "benchmarks", "contention", "--child", name],
            cwd=Path(__file__).parents[1],
            env={**os.environ, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name, (env, _) in SETTINGS.items()
    }
    info = {name: ask(process, "ready") for name, process in children.items()}  # built and warmed up, each in turn
    print("\n".join(f"[{k}] {name}" for k, name in enumerate(SETTINGS, 1)), flush=True)
    epochs = {name: {"quiet": [], "contended": []} for name in SETTINGS}
    try:
        for i in range(args.rounds):
            names = list(SETTINGS) if i % 2 == 0 else list(SETTINGS)[::-1]
            for name in names:
                epochs[name]["quiet"].append(ask(children[name], "epoch"))
                competitor = subprocess.Popen(COMPETITOR)
                try:
                    time.sleep(0.3)
                    epochs[name]["contended"].append(ask(children[name], "epoch"))
                finally:
                    competitor.kill()
                    competitor.wait()
            print(
                f"round {i + 1}, quiet / contended s per epoch: "
                + "; ".join(f"[{k}] {e['quiet'][-1]['s']:.2f} / {e['contended'][-1]['s']:.2f}" for k, e in enumerate(epochs.values(), 1)),
                flush=True,
            )
    finally:
        for process in children.values():
            process.kill()
    load_after, elapsed = os.getloadavg(), time.perf_counter() - started

    rows = []
    for name, kinds in epochs.items():
        row = {"setting": name, "env": SETTINGS[name][0], "threads": SETTINGS[name][1], **info[name]}
        for kind, runs in kinds.items():
            row[f"{kind}_s"] = statistics.median(r["s"] for r in runs)
            row[f"{kind}_cpu_s"] = statistics.median(r["cpu_s"] for r in runs)  # CPU seconds of all its threads per epoch
            row[f"{kind}_epochs_s"] = [r["s"] for r in runs]
            row[f"{kind}_extrapolated"] = sum(r["cut"] for r in runs)
        row["ratio"] = row["contended_s"] / row["quiet_s"]
        rows.append(row)
    fastest = min(r["quiet_s"] for r in rows)
    other = (
        f"1-minute load average {load_before[0]:.1f} before the benchmark and {load_after[0]:.1f} after it "
        "(the benchmark adds about 1, 2 while the competitor runs): other work shared the machine"
    )
    protocol = (
        f"one child process per setting (environment set before torch loads, then torch.set_num_threads for `threads`), "
        f"one untimed warm-up epoch each; then {args.rounds} rounds in which every setting in turn (order reversed every round) "
        f"runs a quiet epoch and an epoch beside `python -c 'while True: pass'` (started 0.3 s before, killed after); "
        f"epoch = every training batch of the sample data (forward, L1 loss, backward, gradient clipping at 1, AdamW), "
        f"no validation; medians per kind; CPU s = the child's user + system time over all its threads; an epoch "
        f"slower than {MAX_EPOCH_S:.0f} s is stopped and its time extrapolated from the steps done"
    )
    for row in rows:
        row |= {
            "contended_vs_fastest_quiet": row["contended_s"] / fastest,
            "rounds": args.rounds,
            "elapsed_s": elapsed,
            "machine": machine(),
            "command": "python -m benchmarks contention" + "".join(f" {a}" for a in (argv or [])),
            "protocol": protocol,
            "other_load": other,
        }
    write("contention", rows, markdown(rows))


def markdown(rows: list[dict]) -> str:
    """The results table and what the CPU times say, from the rows alone (benchmarks/results/contention.json)."""
    r0 = rows[0]
    cut = lambda r, kind: " *" if r[f"{kind}_extrapolated"] else ""  # noqa: E731
    lines = [
        f"Training epochs of the default training (sample data, default GRU, {r0['steps']} steps of batch 256) "
        f"quiet and beside one CPU-bound competitor process ({r0['machine']}); medians of {r0['rounds']} epochs of each kind, "
        f"quiet and contended alternating, settings taking turns. Other work: {r0['other_load']}. Took {r0['elapsed_s']:.0f} s.",
        "",
        "| setting | quiet s / epoch | contended s / epoch | contended / quiet | contended / fastest quiet "
        "| CPU s / epoch, quiet | CPU s / epoch, contended |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r['setting']} | {r['quiet_s']:.2f}{cut(r, 'quiet')} | {r['contended_s']:.2f}{cut(r, 'contended')} | {r['ratio']:.1f}x | "
            f"{r['contended_vs_fastest_quiet']:.1f}x | {r['quiet_cpu_s']:.2f} | {r['contended_cpu_s']:.2f} |"
            for r in rows
        ),
        "",
        "The work per epoch is the same in every row; the CPU seconds it took are not. Torch's default threads "
        f"took {r0['quiet_cpu_s'] / rows[-1]['quiet_cpu_s']:.1f}x (quiet) and {r0['contended_cpu_s'] / rows[-1]['contended_cpu_s']:.1f}x "
        "(contended) the CPU time of one thread: GNU OpenMP's threads spin while they wait, between operations for the next "
        "one, and at the end of each for a peer that the scheduler has set aside for another process. Passive waiting (the same "
        "two threads sleeping instead) or one thread (nothing to wait for) does the epoch in about the CPU time of one thread.",
    ]
    if any(r["quiet_extrapolated"] or r["contended_extrapolated"] for r in rows):
        lines += ["", "\\* epochs stopped after the time limit of the protocol; their time is extrapolated from the steps done."]
    return "\n".join(lines)


def ask(process: subprocess.Popen, command: str) -> dict:
    """Send a child one command line and return its one-line JSON answer."""
    process.stdin.write(command + "\n")
    process.stdin.flush()
    line = process.stdout.readline()
    if not line:
        sys.exit(
            f"a contention child exited (status {process.wait()}); run it alone to see why: "
            f"python -m benchmarks contention --child '{command}'"
        )
    return json.loads(line)


def child(name: str) -> None:
    """A fresh process whose environment holds the setting: build the default training, then run an epoch per `epoch` line."""
    import torch
    from hydra import compose, initialize_config_dir

    from forecast import config
    from forecast.speed import use_threads

    use_threads(SETTINGS[name][1])
    torch.manual_seed(0)
    config.register_resolvers()
    with initialize_config_dir(str(Path(__file__).parents[1] / "conf"), version_base="1.3"):
        cfg = compose("train")
    data = config.build(cfg.data)
    module = config.build(cfg.model, **data.model_args())
    optimizer = torch.optim.AdamW(module.parameters(), lr=cfg.model.lr)
    loader = data.train_dataloader()
    module.train()

    def epoch() -> dict:
        """One pass over the training batches: wall and CPU seconds (extrapolated if stopped at MAX_EPOCH_S)."""
        start, cpu, steps = time.perf_counter(), time.process_time(), 0
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            module.loss(module(x), y).backward()  # x [B, L, C] -> [B, H, T]
            torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.trainer.gradient_clip_val)
            optimizer.step()
            steps += 1
            if time.perf_counter() - start > MAX_EPOCH_S:
                break
        scale = len(loader) / steps
        return {"s": (time.perf_counter() - start) * scale, "cpu_s": (time.process_time() - cpu) * scale, "cut": steps < len(loader)}

    for line in sys.stdin:
        if line.strip() == "ready":
            epoch()  # warm-up
            answer = {"steps": len(loader), "torch_threads": torch.get_num_threads()}
        else:
            answer = epoch()
        print(json.dumps(answer), flush=True)
