"""forecast.children: child commands run one at a time or side by side, statuses kept, failures stop the queue."""

from __future__ import annotations

import sys

from omegaconf import OmegaConf

from forecast import children


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_commands_side_by_side_prefix_their_output_and_report_each_status(capfd):
    gru = py("import time; print('one'); time.sleep(0.5); print('two')")
    lstm = py("import sys; print('bad', file=sys.stderr); sys.exit(2)")
    statuses = children.launch_together({"gru": gru, "lstm": lstm}, at_once=2)
    out, err = capfd.readouterr()
    assert statuses == {"gru": 0, "lstm": 2}
    assert "[gru] one\n" in out and "[gru] two\n" in out and "[lstm] bad\n" in err


def test_after_a_failure_no_further_command_starts():
    statuses = children.launch_together({"a": py("raise SystemExit(1)"), "b": py("pass")}, at_once=1)
    assert statuses == {"a": 1}
    assert children.launch(py("raise SystemExit(3)")) == 3


def test_trainings_run_side_by_side_only_on_a_cpu_with_cores_to_spare(monkeypatch):
    monkeypatch.setattr(children.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(children, "gpu_available", lambda: False)

    def cfg(threads=1, **trainer):
        return OmegaConf.create({"threads": threads, "trainer": {"accelerator": "auto", "devices": 1, "strategy": "auto", **trainer}})

    assert children.side_by_side(cfg(), 2) == 2
    assert children.side_by_side(cfg(), 3) == 2  # two cores, one thread each
    assert children.side_by_side(cfg(threads=2), 2) == 1
    assert children.side_by_side(cfg(threads=None), 2) == 1  # torch's default: every core
    assert children.side_by_side(cfg(accelerator="gpu"), 2) == 1
    assert children.side_by_side(cfg(strategy="ddp", devices=2), 2) == 1
    monkeypatch.setattr(children, "gpu_available", lambda: True)
    assert children.side_by_side(cfg(), 2) == 1  # auto picks the GPU
