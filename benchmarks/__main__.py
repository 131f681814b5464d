"""python -m benchmarks {ett,design,step} [options]: see each module's docstring."""

import sys

from benchmarks import design, ett, step

COMMANDS = {"ett": ett.main, "design": design.main, "step": step.main}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: python -m benchmarks {{{','.join(COMMANDS)}}} [options]  (--help for each)")
    COMMANDS[sys.argv[1]](sys.argv[2:])
