"""Shared helpers: run the command-line tools as a user would, in a temp dir."""

import os
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from mlflow import MlflowClient

from forecast import config

config.register_resolvers()  # the ${sample_csv:} and ${mixed_precision:} of conf/, for tests that compose it

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FORECAST_DATA_DIR", REPO.parent / "shared" / "data"))
# a few seconds per epoch on two CPU cores: small enough for the fast suite
TINY = ["data.lookback=48", "data.horizon=24", "model.hidden_size=32", "trainer.max_epochs=2"]


def run_cli(module: str, *args: str, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m <module> <args>` in `cwd`, with the embedded tracking store of that folder."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
    full_env |= {"MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONWARNINGS": "ignore"} | (env or {})
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def build_data(overrides: list[str]):
    """The data module the command would build from these overrides, its InputError unwrapped."""
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    try:
        return hydra.utils.instantiate(cfg.data)
    except InstantiationException as error:
        raise error.__cause__ from None


def ett_file(name: str) -> Path:
    """A benchmark file from FORECAST_DATA_DIR (default ../shared/data): a skip outside CI, a failure in CI (CI=true)."""
    path = SHARED_DATA / name
    if not path.is_file():
        why = f"{name} not found in {SHARED_DATA} (set FORECAST_DATA_DIR to the folder holding it)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{why}; CI must run the benchmark tests")
        pytest.skip(why)
    return path


@pytest.fixture
def ett_h1() -> Path:
    return ett_file("ETTh1.csv")


# retrain on a few weeks of the sample, dropped as daily CSV files into drops/, with tiny trainings
RETRAIN = [
    "data=csv",
    "data.path=drops",
    "data.na_values=[-9999]",
    "data.lookback=48",
    "data.horizon=24",
    "challengers=[gru]",
    'train_args=["model.hidden_size=32","trainer.max_epochs=1"]',
]


def sample_drop(folder: Path, name: str, rows: slice) -> Path:
    """Rows of the sample data (data/sensors.csv) written as one CSV drop in `folder`."""
    lines = (REPO / "data" / "sensors.csv").read_text().splitlines(keepends=True)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(lines[0] + "".join(lines[1:][rows]))
    return folder / name


@pytest.fixture(scope="session")
def champion(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A folder whose store (mlflow.db, mlruns/) holds a champion, promoted by a first real retrain on one drop."""
    folder = tmp_path_factory.mktemp("service")
    sample_drop(folder / "drops", "day1.csv", slice(0, 3000))
    done = run_cli("forecast.retrain", *RETRAIN, cwd=folder)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return folder, done


def store_runs(folder: Path, where: str = "", experiment: str = "forecast") -> tuple[MlflowClient, list]:
    """The embedded store of `folder` (mlflow.db) and the runs of `experiment` matching `where` (none: no experiment yet)."""
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    found = client.get_experiment_by_name(experiment)
    return client, client.search_runs([found.experiment_id], where) if found else []


def no_running_runs(folder: Path) -> bool:
    """No run of any experiment of the store in `folder` is left RUNNING (true when there is no store)."""
    if not (Path(folder) / "mlflow.db").exists():
        return True
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    return all(r.info.status != "RUNNING" for e in client.search_experiments() for r in client.search_runs([e.experiment_id]))
