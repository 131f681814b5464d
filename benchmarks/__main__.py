"""python -m benchmarks {ett,design,step,peers,ingest,windows,latency,contention,quantiles,fleet} [options]: see each module's docstring."""

import importlib
import sys

COMMANDS = ("ett", "design", "step", "peers", "ingest", "windows", "latency", "contention", "quantiles", "fleet")

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: python -m benchmarks {{{','.join(COMMANDS)}}} [options]  (--help for each)")
    importlib.import_module(f"benchmarks.{sys.argv[1]}").main(sys.argv[2:])
