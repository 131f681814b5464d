"""python -m benchmarks design: how much each recurrent design option matters, judged on validation.

Each variant changes one setting of the defaults (conf/model/gru.yaml) and trains on ETTh1 under
the standard protocol; the defaults are chosen by `val/best_loss` (the restored checkpoint's
validation MSE). The test MSE is listed for information only and never used to choose.

    python -m benchmarks design                         # ETTh1, L = H = 96, GRU
    python -m benchmarks design --lookback 720 --only defaults,hidden_size=512
"""

from __future__ import annotations

import argparse

from benchmarks.sweep import latest, machine, multirun, rows, write

EXPERIMENT = "design"
VARIANTS = {
    "defaults": [],
    "norm=revin": ["model.norm=revin"],
    "norm=none": ["model.norm=none"],
    "decoder=direct": ["model.decoder=direct"],
    "channel_independent=false": ["model.channel_independent=false"],
    "channel_embedding=false": ["model.channel_embedding=false"],
    "segment_len=1": ["model.segment_len=1"],
    "segment_len=12": ["model.segment_len=12"],
    "segment_len=48": ["model.segment_len=48"],
    "hidden_size=64": ["model.hidden_size=64"],
    "hidden_size=256": ["model.hidden_size=256"],
    "hidden_size=512": ["model.hidden_size=512"],
    "num_layers=2": ["model.num_layers=2"],
    "dropout=0": ["model.dropout=0"],
    "dropout=0.5": ["model.dropout=0.5"],
    "loss=mae": ["model.loss=mae"],
    "lr=0.003": ["model.lr=0.003"],
    "weight_decay=0.01": ["model.weight_decay=0.01"],
    "segrnn": ["model.hidden_size=512", "model.dropout=0.5", "model.lr=0.001"],  # SegRNN's published ETTh1 settings
    "train_stride=1": ["data.train_stride=1"],
    "train_stride=4": ["data.train_stride=4"],
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks design", description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="etth1", help="data preset (default etth1)")
    parser.add_argument("--model", default="gru", help="model preset (default gru)")
    parser.add_argument("--lookback", type=int, default=96)
    parser.add_argument("--horizon", type=int, default=96)
    parser.add_argument("--only", help="comma-separated variant names (default: all)")
    parser.add_argument("--table-only", action="store_true", help="tabulate what the MLflow experiment holds")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(VARIANTS)
    setting = [f"data={args.data}", f"model={args.model}", f"data.lookback={args.lookback}", f"data.horizon={args.horizon}"]
    if not args.table_only:
        for name in names:
            multirun([*setting, *VARIANTS[name], f"tracking.experiment={EXPERIMENT}", f"+tracking.tags.variant='{name}'"])
    found = [
        r
        for r in rows(EXPERIMENT)
        if r["variant"]
        and r["dataset"].lower() == args.data
        and r["model"] == args.model
        and r["lookback"] == args.lookback
        and r["horizon"] == args.horizon
    ]
    found = latest(found, key=lambda r: (r["dataset"], r["model"], r["variant"]))
    found.sort(key=lambda r: r["val_loss"])
    base = next((r["settings"] for r in found if r["variant"] == "defaults"), {})
    shown = ("hidden_size", "num_layers", "segment_len", "norm", "decoder", "channel_independent", "dropout", "loss", "lr")
    lines = [
        "Each variant changes one setting of this base (the defaults when the sweep ran): "
        + ", ".join(f"{k}={base[k]}" for k in shown if k in base)
        + ".",
        "",
        f"Validation sweep on {found[0]['dataset'] if found else args.data}, {args.model}, L = {args.lookback}, H = {args.horizon} "
        f"({machine()}); sorted by validation MSE.",
        "",
        "| variant | val MSE | test MSE | params | fit s | epochs to best |",
        "|---|---:|---:|---:|---:|---:|",
        *(f"| {r['variant']} | {r['val_loss']:.4f} | {r['mse']:.4f} | {r['params']:,} | {r['fit_s']:.0f} | {r['epochs']} |" for r in found),
    ]
    name = f"design-{args.data}-{args.model}-L{args.lookback}" + (f"-H{args.horizon}" if args.horizon != 96 else "")
    write(name, found, "\n".join(lines))
