"""python -m forecast.datasets: list, fetch (sha256-checked, atomic) and path, against a local server, never the internet."""

import dataclasses
import functools
import hashlib
import http.server
import threading

import pytest
from conftest import REPO, run_cli
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from forecast import datasets
from forecast.errors import InputError

BODY = b"date,a\n2020-01-01 00:00:00,1\n2020-01-01 01:00:00,2\n2020-01-01 02:00:00,3\n"


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving the folder `served/`; yields (folder, base URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{httpd.server_address[1]}/ett"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def toy(monkeypatch, tmp_path, server):
    """The registry holds one 3-row set TOY whose published file is BODY; the cache folder is empty."""
    folder, url = server
    (folder / "ett").mkdir()
    (folder / "ett" / "toy.csv").write_bytes(BODY)
    entry = datasets.Dataset("TOY", "toy.csv", 3, "1h", hashlib.sha256(BODY).hexdigest(), base_url=url)
    monkeypatch.setattr(datasets, "DATASETS", {"TOY": entry})
    monkeypatch.setenv("FORECAST_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FORECAST_DATASETS_URL", raising=False)
    return folder / "ett" / "toy.csv"


def test_list_names_every_preset_set_with_source_digest_licence_and_citation(capsys):
    datasets.main(["list"])
    out = capsys.readouterr().out
    for name in ("ETTh1", "ETTh2", "ETTm1", "ETTm2"):
        assert f"https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/{name}.csv" in out
    assert "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066" in out  # ETTh1
    assert "6ce1759b1a18e3328421d5d75fadcb316c449fcd7cec32820c8dafda71986c9e" in out  # ETTm1
    assert "17,420 rows" in out and "69,680 rows" in out
    assert out.count("CC BY-ND 4.0") == 4 and out.count("Informer") == 4 and "AAAI 2021" in out


def test_fetch_downloads_checks_and_renames_into_the_cache_folder(toy, tmp_path, capsys):
    path = datasets.fetch("toy")  # any letter case
    assert path == tmp_path / "cache" / "toy.csv" and path.read_bytes() == BODY
    assert "sha256 verified" in capsys.readouterr().out
    assert sorted(p.name for p in path.parent.iterdir()) == ["toy.csv"]  # no partial file left
    assert datasets.dataset_path("TOY") == str(path)
    toy.unlink()  # the source is gone: a second fetch must not need it
    assert datasets.fetch("TOY") == path and "already in" in capsys.readouterr().out
    with pytest.raises(InputError, match="could not download http://127.0.0.1:.*/ett/toy.csv"):
        datasets.fetch("TOY", force=True)
    assert path.read_bytes() == BODY  # a failed download leaves the fetched file alone


def test_a_digest_mismatch_is_an_error_and_leaves_nothing(toy, tmp_path):
    toy.write_bytes(BODY.replace(b"3\n", b"4\n"))
    with pytest.raises(InputError, match="not the published .*it was removed"):
        datasets.fetch("TOY")
    assert list((tmp_path / "cache").iterdir()) == []


def test_an_unknown_digest_is_recorded_beside_the_file_and_said_unverified(toy, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(datasets.DATASETS, "TOY", dataclasses.replace(datasets.DATASETS["TOY"], sha256=None))
    datasets.fetch("TOY")
    assert "NOT verified" in capsys.readouterr().out
    assert (tmp_path / "cache" / "toy.csv.sha256").read_text() == f"{hashlib.sha256(BODY).hexdigest()}  toy.csv\n"


def test_the_base_url_is_overridden_by_the_environment(toy, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "toy.csv").write_bytes(BODY)
    monkeypatch.setenv("FORECAST_DATASETS_URL", mirror.as_uri())
    toy.unlink()  # only the mirror has it
    assert datasets.fetch("TOY").read_bytes() == BODY


def test_a_missing_file_says_how_to_fetch_it(monkeypatch, tmp_path):
    monkeypatch.setenv("FORECAST_DATA_DIR", str(tmp_path))
    with pytest.raises(InputError) as e:
        datasets.dataset_path("ETTh1")
    assert str(e.value) == (
        f"ETTh1.csv is not in {tmp_path}; fetch it with python -m forecast.datasets fetch ETTh1 "
        "(or set FORECAST_DATA_DIR to a folder holding it)"
    )
    with pytest.raises(InputError, match="unknown data set 'ETTh9'; known: ETTh1, ETTh2, ETTm1, ETTm2"):
        datasets.dataset_path("ETTh9")


def test_the_cache_folder_defaults_to_the_users_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("FORECAST_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert datasets.cache_dir() == tmp_path / "forecast" / "datasets"


@pytest.mark.parametrize("preset,name", [("etth1", "ETTh1"), ("etth2", "ETTh2"), ("ettm1", "ETTm1"), ("ettm2", "ETTm2")])
def test_the_presets_read_the_fetched_file(preset, name, monkeypatch, tmp_path):
    (tmp_path / f"{name}.csv").write_text("date,a\n")
    monkeypatch.setenv("FORECAST_DATA_DIR", str(tmp_path))
    OmegaConf.register_new_resolver("dataset_path", datasets.dataset_path, replace=True)
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"data={preset}"])
    assert cfg.data.path == str(tmp_path / f"{name}.csv") and cfg.data.name == name


@pytest.mark.e2e
def test_training_on_a_preset_that_was_not_fetched_says_how_to_fetch_it(tmp_path):
    done = run_cli("forecast.train", "data=ettm2", cwd=tmp_path, env={"FORECAST_DATA_DIR": str(tmp_path / "empty")})
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]  # Lightning's device lines may come first
    assert "Traceback" not in done.stderr and errors == [
        f"error: ETTm2.csv is not in {tmp_path / 'empty'}; fetch it with python -m forecast.datasets "
        "fetch ETTm2 (or set FORECAST_DATA_DIR to a folder holding it)"
    ]
    assert not (tmp_path / "mlflow.db").exists()  # stopped before any run


@pytest.mark.e2e
def test_fetch_and_path_commands_against_a_local_server(server, tmp_path, ett_h1):
    folder, url = server
    (folder / "ett").mkdir()
    (folder / "ett" / "ETTh1.csv").write_bytes(ett_h1.read_bytes())  # served from a temp folder, never committed
    env = {"FORECAST_DATA_DIR": str(tmp_path / "cache"), "FORECAST_DATASETS_URL": url}
    done = run_cli("forecast.datasets", "fetch", "ETTh1", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "17,420 rows, sha256 verified" in done.stdout
    done = run_cli("forecast.datasets", "path", "ETTh1", cwd=tmp_path, env=env)
    assert done.returncode == 0 and done.stdout.strip() == str(tmp_path / "cache" / "ETTh1.csv")
    done = run_cli("forecast.datasets", "path", "ETTm1", cwd=tmp_path, env=env)
    assert done.returncode == 2 and done.stderr.startswith("error: ETTm1.csv is not in ") and "Traceback" not in done.stderr
