"""python -m forecast.compare and python -m forecast.report, as a user runs them, in a temp dir."""

import re

import pytest
from conftest import REPO, TINY, run_cli, store_runs
from hydra import compose, initialize_config_dir

from forecast import comparison, config
from forecast.errors import InputError

# 2 conditions (lookback 48, lookback 24) x gru, lstm x one seed, one epoch on every 2nd training window
SMALL = [*TINY[:-1], "trainer.max_epochs=1", "data.train_stride=2", "seeds=1", "lookbacks=[24]", "model.segment_len=12"]
SECTIONS = [
    "## Verdict",
    "## Textbook claims against this measurement",
    "## Measured per architecture",
    "## Sub-comparisons",
    "## Plots",
    "## Runs",
]
PLOTS = ["error_vs_fit_time.png", "val_loss_by_epoch.png", "error_by_step.png", "example_forecast.png"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    done = run_cli("forecast.compare", *SMALL, cwd=folder, timeout=900)  # about a minute on two idle cores
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    client, runs = store_runs(folder)
    parent = next(r for r in runs if r.data.tags.get("kind") == "comparison")
    return folder, done, client, parent, [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


@pytest.mark.e2e
def test_one_parent_and_a_child_per_condition_architecture_and_seed(compared):
    folder, done, client, parent, children = compared
    assert parent.info.status == "FINISHED" and parent.data.tags["dataset"] == "sample"
    found = sorted((r.data.tags["condition"], r.data.tags["architecture"], r.data.tags["seed"]) for r in children)
    assert found == sorted((c, a, "0") for c in ("base", "lookback-24") for a in ("gru", "lstm"))
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.params["data.lookback"] == {"base": "48", "lookback-24": "24"}[run.data.tags["condition"]]
        assert run.data.params["model.hidden_size"] == "32" and run.data.params["data.horizon"] == "24"
    assert len(store_runs(folder)[1]) == 5  # nothing else was recorded


@pytest.mark.e2e
def test_the_report_has_every_section_a_verdict_and_the_plots(compared):
    folder, done, client, parent, _ = compared
    report = folder / "reports" / parent.info.run_id
    assert f"report: reports/{parent.info.run_id}/report.md" in done.stdout
    text = (report / "report.md").read_text()
    for section in SECTIONS:
        assert section in text, section
    assert re.search(r"at most 1 epochs, .* AdamW lr [\d.e-]+, loss \w+, batch \d+,", text), text[:1500]  # the children's own settings
    speed = (
        r"(the (GRU|LSTM) trains [\d.]+x faster per step than the (GRU|LSTM) on this machine \(IQR [\d.]+-[\d.]+\)"
        r"|no difference in training speed is measurable on this machine \(GRU / LSTM step time [\d.]+, IQR [\d.]+-[\d.]+\))"
    )
    sentence = re.search(rf"On sample {speed}, and .*Diebold-Mariano p [=<] [\d.e-]+\); .*parameters\.", text)
    assert sentence and sentence.group(0) in done.stdout
    assert "per epoch" not in sentence.group(0)  # load-sensitive epoch times are not the verdict
    assert re.search(r"training step \(base, median of 30, interleaved\): gru [\d.]+ ms, lstm [\d.]+ ms", done.stdout)
    for label in (
        "test MAE (data units)",
        "test RMSE (data units)",
        "test MSE (scaled)",
        "time per epoch, s",
        "epochs to best val/loss",
        "training windows / s",
        "inference ms / window, batch 1",
        "inference ms / window, batch 256",
        "peak RSS, MB",
        "recurrent parameters",
        "The LSTM holds long dependencies better | lookback-24: LSTM",
    ):
        assert label in text, label
    for plot in PLOTS:
        assert (report / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({plot})" in text
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {f"report/{f}" for f in [*PLOTS, "report.md", "report.html"]} <= logged
    assert "speed.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    metrics = client.get_run(parent.info.run_id).data.metrics
    assert "verdict/lstm_vs_gru/dm_p_value" in metrics and "verdict/lstm_vs_gru/step_time_ratio_q25" in metrics


@pytest.mark.e2e
def test_the_report_command_rebuilds_the_same_report_from_mlflow(compared):
    folder, _, _, parent, _ = compared
    done = run_cli("forecast.report", parent.info.run_id, "--out", "rebuilt", cwd=folder)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (folder / "rebuilt" / "report.md").read_text() == (folder / "reports" / parent.info.run_id / "report.md").read_text()
    assert all((folder / "rebuilt" / plot).is_file() for plot in PLOTS)


@pytest.mark.e2e
def test_a_failed_child_fails_the_comparison(tmp_path):
    done = run_cli("forecast.compare", *TINY, "seeds=1", "trainer.precision=bogus", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "error: bad setting in lightning.Trainer" in done.stderr
    assert "failed with exit status 2" in done.stderr and "marked FAILED" in done.stderr
    _, runs = store_runs(tmp_path)
    assert [r.info.status for r in runs if r.data.tags.get("kind") == "comparison"] == ["FAILED"]


@pytest.mark.e2e
@pytest.mark.parametrize(
    "args, message",
    [
        (["model=lstm"], "models=[...]"),
        (["models=[gru,transformer]"], "no model config 'transformer'"),
    ],
)
def test_bad_input_is_two_lines_and_no_run(tmp_path, args, message):
    done = run_cli("forecast.compare", *args, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert errors[0].startswith("error: ") and message in errors[0] and len(errors) <= 2
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.e2e
def test_the_report_of_a_run_that_is_not_a_comparison_is_refused(compared):
    folder, _, _, _, children = compared
    done = run_cli("forecast.report", children[0].info.run_id, cwd=folder)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith(f"error: run {children[0].info.run_id} is not a comparison")


def test_budget_params_matches_parameter_counts_within_2_percent():
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        data = config.build(compose("compare").data)
        for passed in ([], ["model.hidden_size=48"]):
            sizes = comparison.hidden_sizes("params", ["gru", "lstm"], passed, data.model_args())
            counts = {m: comparison.count(comparison.model_config(m, passed), sizes[m], data.model_args()) for m in sizes}
            assert sizes["gru"] == (48 if passed else 128) and sizes["lstm"] < sizes["gru"]
            assert abs(counts["lstm"] - counts["gru"]) / counts["gru"] <= 0.02, (sizes, counts)


def test_small_data_keeps_the_most_recent_training_windows_and_nothing_else_changes():
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        node = compose("compare", overrides=["data.lookback=48", "data.horizon=24"]).data
        full, small = config.build(node), config.build(node, train_fraction=0.1)
    train, kept = full.datasets["train"].origins, small.datasets["train"].origins
    assert len(kept) == round(0.1 * len(train)) and (kept == train[-len(kept) :]).all()
    for split in ("val", "test"):
        assert (small.datasets[split].origins == full.datasets[split].origins).all()
    assert (small.scaler.mean == full.scaler.mean).all()
    with pytest.raises(InputError, match="train_fraction"):
        config.build(node, train_fraction=0)


def test_baselines_can_be_contenders_though_only_the_cells_have_a_search_space():
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        assert comparison.model_config("linear", []).network == "linear"
        assert comparison.model_config("seasonal_naive", []).network == "seasonal_naive"
        with pytest.raises(InputError, match="no model config 'transformer'"):
            comparison.model_config("transformer", [])
