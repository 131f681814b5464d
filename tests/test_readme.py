"""Every command of the README, run as a user runs it: a documented command cannot silently stop working.

The README's ```bash blocks are read line by line (continuations joined, comments dropped, the
shell's quoting applied). Each command is either in RUN (run in a temp dir on small data, with
tiny settings appended, and its exit status asserted) or in NOT_RUN with the reason it cannot run
in a test and, where one exists, a dry run that checks it still parses. A README command in
neither list fails the test.
"""

import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, run_cli

TINY = ["trainer.max_epochs=1", "data.lookback=48", "model.hidden_size=16"]
# bare, data.sep=';' would reach Hydra as data.sep=; (a grammar error): the README quotes it for the shell
EUROPEAN = (
    "python -m forecast.train data=csv data.path=AirQuality.csv data.sep=';' data.decimal=',' data.na_values=[-200] "
    "data.date_column=Date data.time_column=Time data.time_format='%d/%m/%Y %H.%M.%S'"
)

# README command (as the shell hands it over, words joined by spaces) -> (group, appended tiny settings).
# A group runs its commands in README order in one temp dir, so later ones see what earlier ones made.
RUN = {
    "python -m forecast.train -m model=gru,lstm": ("train", TINY),
    "python -m forecast.train data=csv data.path=readings.csv": ("train", TINY),
    EUROPEAN: ("train", TINY),
    "python -m forecast.compare data=csv data.path=readings.csv": ("train", ["seeds=1", *TINY]),
    "python -m forecast.report <parent run id>": ("train", []),
    "python -m forecast.retrain": (
        "service",
        ["challengers=[gru]", "data.lookback=48", "data.horizon=24", 'train_args=["model.hidden_size=16","trainer.max_epochs=1"]'],
    ),
    "python -m forecast.predict output=forecast.csv": ("service", []),
    "python -m forecast.datasets list": ("datasets", []),
    "python -m forecast.datasets fetch ETTh1": ("datasets", []),
    "python -m forecast.datasets path ETTh1": ("datasets", []),
    "python -m forecast.sample": ("sample", []),
    "python -m forecast.sample fleet --devices 20 --days 60 --output meters.csv": ("fleet", []),
    "python -m forecast.train data=fleet data.path=meters.csv data.series_column=device": ("fleet", TINY),
}
SCHEDULE = 'python -m forecast.schedule retrain_args=["data=csv","data.path=drops/"]'
# README command -> (why it is not run here, a dry run that checks it parses or None)
NOT_RUN = {
    "make train": (
        "builds .venv, then trains 20 epochs on the sample (minutes); RUN's forecast.train commands cover the training",
        ["make", "-n", "train"],
    ),
    "make test": ("runs this suite, this file included", ["make", "-n", "test"]),
    "make test-fast": ("runs the in-process tier of this suite", ["make", "-n", "test-fast"]),
    "make lint": ("CI runs it as its own step (.ci/run)", ["make", "-n", "lint"]),
    "make docs": ("installs the docs extra and writes site/ into the checkout; CI runs it as its own step", ["make", "-n", "docs"]),
    "mlflow ui --backend-store-uri sqlite:///mlflow.db": ("a web server that runs until stopped; it has no dry run", None),
    "mlflow models serve -m models:/forecast@champion --env-manager local -h 127.0.0.1 -p 5001": (
        "an HTTP server that runs until stopped; tests/test_serve.py starts this command and posts to it",
        None,
    ),
    "python -m forecast.tune model=gru trials=20": (
        "20 trainings (tens of minutes); tests/test_tune.py runs tiny studies: Ctrl-C, resume, pruning, DDP",
        [sys.executable, "-m", "forecast.tune", "model=gru", "trials=20", "--cfg", "job"],
    ),
    "python -m forecast.train +tuned=<tune run id>": (
        "needs a finished tuning; tests/test_tune.py feeds a tiny study's best settings back to a training",
        [sys.executable, "-m", "forecast.train", "+tuned=0", "--cfg", "job"],
    ),
    "python -m forecast.compare budget=tuned": (
        "12 tuning trials and 6 trainings (23 min on two cores); tests/test_tune.py runs a tiny one end to end",
        [sys.executable, "-m", "forecast.compare", "budget=tuned", "--cfg", "job"],
    ),
    "python -m forecast.predict data=fleet data.path=meters.csv output=next.csv": (
        "needs a registered fleet model; tests/test_fleet_io.py retrains on a fleet, then predicts seen and unseen devices",
        [sys.executable, "-m", "forecast.predict", "data=fleet", "data.path=meters.csv", "output=next.csv", "--cfg", "job"],
    ),
    SCHEDULE: (
        "a scheduler that runs until stopped (nightly); tests/test_schedule.py fires it once",
        [sys.executable, "-m", "forecast.schedule", 'retrain_args=["data=csv","data.path=drops/"]', "--cfg", "job"],
    ),
}


def readme_commands() -> dict[str, list[str]]:
    """The command lines of the README's ```bash blocks, in order, each once: its words joined -> its words,
    as the shell hands them to the program (continuations joined, comments dropped, quotes applied)."""
    blocks = re.findall(r"^```bash\n(.*?)^```", (REPO / "README.md").read_text(), flags=re.S | re.M)
    commands = {}
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands[" ".join(words)] = words
    return commands


def test_every_readme_command_is_run_or_listed_with_a_reason():
    commands = readme_commands()
    unknown = [c for c in commands if c not in RUN and c not in NOT_RUN]
    assert not unknown, f"README commands neither run nor listed in NOT_RUN with a reason: {unknown}"
    stale = sorted((set(RUN) | set(NOT_RUN)) - set(commands))
    assert not stale, f"listed here but no longer in the README: {stale}"


@pytest.mark.e2e
@pytest.mark.parametrize("command", [c for c, (_, dry_run) in NOT_RUN.items() if dry_run])
def test_commands_that_cannot_run_in_a_test_still_parse(command, tmp_path):
    _, dry_run = NOT_RUN[command]
    cwd = REPO if dry_run[0] == "make" else tmp_path
    done = subprocess.run(dry_run, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{command}: {done.stdout[-1000:]}{done.stderr[-2000:]}"


def run(command: str, cwd, env: dict | None = None, substitutions: dict | None = None) -> subprocess.CompletedProcess:
    """A README command with its group's tiny settings appended, in `cwd`; asserts exit status 0."""
    _, extra = RUN[command]
    words = readme_commands()[command]
    for placeholder, value in (substitutions or {}).items():  # "<parent run id>" is three words
        joined = " ".join(words)
        if placeholder in joined:
            words = shlex.split(joined.replace(placeholder, value))
    assert words[:2] == ["python", "-m"], command
    done = run_cli(words[2], *words[3:], *extra, cwd=cwd, env=env, timeout=600)
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def group(name: str) -> list[str]:
    """The README's commands of one group, in README order, each once."""
    return [c for c in readme_commands() if c in RUN and RUN[c][0] == name]


def write_readings(folder) -> None:
    """readings.csv (wide, hourly, two sensors) and AirQuality.csv (';', decimal commas, -200, date and time apart)."""
    rng = np.random.default_rng(0)
    stamps = pd.date_range("2024-03-10 18:00", periods=600, freq="h")
    day = np.arange(600) / 24 * 2 * np.pi
    frame = pd.DataFrame(
        {
            "timestamp": stamps.astype(str),
            "power_kw": 10 + 3 * np.sin(day) + rng.normal(0, 0.3, 600),
            "outdoor_temp_c": 5 + 4 * np.cos(day) + rng.normal(0, 0.3, 600),
        }
    )
    frame.round(3).to_csv(folder / "readings.csv", index=False)
    co = [f"{v:.1f}".replace(".", ",") for v in 2 + np.sin(day) + rng.normal(0, 0.1, 600)]
    co[100] = "-200"
    lines = ["Date;Time;CO(GT);NO2(GT)"] + [f"{t:%d/%m/%Y};{t:%H.%M.%S};{c};{n:.0f}" for t, c, n in zip(stamps, co, 100 + 20 * np.cos(day))]
    (folder / "AirQuality.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The service commands, started in a thread as soon as a test asks for them: they need nothing of the
    training group, so the two groups run side by side (one process each), which halves the file's wall time."""
    folder = tmp_path_factory.mktemp("service")
    with ThreadPoolExecutor(1) as pool:
        yield folder, pool.submit(lambda: [run(command, folder) for command in group("service")])


@pytest.mark.e2e
def test_the_training_and_comparison_commands_run(tmp_path, service):
    write_readings(tmp_path)
    found = {}
    for command in group("train"):
        done = run(command, tmp_path, substitutions=found)
        if "forecast.compare" in command:
            found["<parent run id>"] = re.search(r"report: reports/(\w+)/report.md", done.stdout).group(1)
    assert (tmp_path / "reports" / found["<parent run id>"] / "report.md").is_file()


@pytest.mark.e2e
def test_the_service_commands_run(service):
    folder, done = service
    done.result(timeout=900)  # re-raises a failed command's assertion
    forecast = pd.read_csv(folder / "forecast.csv")
    assert len(forecast) == 24 and forecast.drop(columns="timestamp").notna().all().all()


@pytest.mark.e2e
def test_the_dataset_commands_run_against_a_local_copy(tmp_path, ett_h1):
    env = {"FORECAST_DATA_DIR": str(tmp_path / "cache"), "FORECAST_DATASETS_URL": ett_h1.parent.resolve().as_uri()}
    outputs = [run(command, tmp_path, env=env).stdout for command in group("datasets")]
    assert "sha256 verified" in outputs[1] and outputs[2].strip() == str(tmp_path / "cache" / "ETTh1.csv")


@pytest.mark.e2e
def test_the_sample_command_regenerates_the_embedded_data_byte_for_byte(tmp_path):
    (tmp_path / "data").mkdir()
    for command in group("sample"):
        run(command, tmp_path)
    assert (tmp_path / "data" / "sensors.csv").read_bytes() == (REPO / "data" / "sensors.csv").read_bytes()


@pytest.mark.e2e
def test_the_fleet_commands_run(tmp_path):
    for command in group("fleet"):
        done = run(command, tmp_path)
    per_device = list((tmp_path / "mlruns").rglob("test_by_series.parquet"))
    assert len(per_device) == 1 and len(pd.read_parquet(per_device[0])) >= 15, done.stdout[-2000:]
