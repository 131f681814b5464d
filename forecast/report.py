"""python -m forecast.report <parent run id>: the report of a comparison, rebuilt from MLflow alone.

    python -m forecast.report 3f2a...              # writes reports/<id>/ (report.md, report.html, *.png)
    python -m forecast.report 3f2a... --out here/  # another folder
    python -m forecast.report 3f2a... --log        # and (re)attach it to the parent run under report/

Everything comes from the tracking store (MLFLOW_TRACKING_URI, else sqlite:///mlflow.db): the
parent run's settings and its `speed.json` (the networks' interleaved training-step times,
`forecast.speed`), its children's metrics and val/loss histories, and their `evaluation/`
artifacts (errors per window and per horizon step, an example window), so a comparison trained on
a cluster can be reported anywhere. `python -m forecast.compare` calls `build` at its end, which
also sets the verdict as the parent run's description in the MLflow UI. The report itself is
built by forecast/comparison_report.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from forecast.comparison_report import build
from forecast.errors import reported


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m forecast.report", description=__doc__.splitlines()[0])
    parser.add_argument("run_id", help="the parent run id that python -m forecast.compare printed")
    parser.add_argument("--out", type=Path, help="folder to write (default reports/<run id>)")
    parser.add_argument("--log", action="store_true", help="also log the report to the parent run under report/")
    args = parser.parse_args(argv)
    with reported():
        folder = build(args.run_id, args.out or Path("reports") / args.run_id, log=args.log)
    print((folder / "verdict.txt").read_text().strip())
    print(f"report: {folder / 'report.md'}")


if __name__ == "__main__":
    main()
