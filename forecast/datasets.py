"""python -m forecast.datasets: the public benchmark sets the presets know, fetched by name into a cache folder.

    python -m forecast.datasets list                # each set: rows, source URL, sha256, licence, citation
    python -m forecast.datasets fetch ETTh1         # download into the cache folder, sha256-checked
    python -m forecast.datasets fetch ETTh1 --force # download again even when the file is there
    python -m forecast.datasets path ETTh1          # where the presets read it (status 2 when not fetched)

The cache folder is $FORECAST_DATA_DIR when set, else $XDG_CACHE_HOME/forecast/datasets
(~/.cache/forecast/datasets). FORECAST_DATASETS_URL replaces the sources' base URL: a mirror, a
folder (file:///...) or a local server in tests. A download goes to a temporary file in the cache
folder and is renamed into place only after its sha256 matched, so a file under its final name is
always whole. The presets (conf/data/etth1.yaml, ...) read `${dataset_path:ETTh1}`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from forecast.errors import InputError, reported

ETT_URL = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small"
ETT_LICENCE = "CC BY-ND 4.0 (https://creativecommons.org/licenses/by-nd/4.0/): use and unmodified redistribution with attribution"
ETT_CITATION = (
    'Zhou et al., "Informer: Beyond Efficient Transformer for Long Sequence Time-Series Forecasting", '
    "AAAI 2021 (https://github.com/zhouhaoyi/ETDataset)"
)


@dataclass(frozen=True)
class Dataset:
    """One public file.

    Args:
        name: what the commands and the `${dataset_path:NAME}` resolver call it.
        file: its file name at the source and in the cache folder.
        rows: data rows (header not counted).
        step: time between rows.
        sha256: digest of the published file; None when unknown (a fetch then records what it got).
        base_url: the folder the file is downloaded from (FORECAST_DATASETS_URL replaces it).
        licence: the licence it is published under.
        citation: what a result on it cites.
    """

    name: str
    file: str
    rows: int
    step: str
    sha256: str | None
    base_url: str = ETT_URL
    licence: str = ETT_LICENCE
    citation: str = ETT_CITATION

    def url(self) -> str:
        return f"{os.environ.get('FORECAST_DATASETS_URL', self.base_url).rstrip('/')}/{self.file}"


# ETTh1 and ETTm1 digests: computed from copies of the published files; ETTh2 and ETTm2: as recorded
# beside those copies for the same commit (1d16c8f) of zhouhaoyi/ETDataset, not recomputed here.
DATASETS = {
    d.name: d
    for d in (
        Dataset("ETTh1", "ETTh1.csv", 17420, "1h", "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066"),
        Dataset("ETTh2", "ETTh2.csv", 17420, "1h", "a3dc2c597b9218c7ce1cd55eb77b283fd459a1d09d753063f944967dd6b9218b"),
        Dataset("ETTm1", "ETTm1.csv", 69680, "15min", "6ce1759b1a18e3328421d5d75fadcb316c449fcd7cec32820c8dafda71986c9e"),
        Dataset("ETTm2", "ETTm2.csv", 69680, "15min", "db973ca252c6410a30d0469b13d696cf919648d0f3fd588c60f03fdbdbadd1fd"),
    )
}


def cache_dir() -> Path:
    """$FORECAST_DATA_DIR, else the user's cache folder: $XDG_CACHE_HOME/forecast/datasets or ~/.cache/forecast/datasets."""
    if os.environ.get("FORECAST_DATA_DIR"):
        return Path(os.environ["FORECAST_DATA_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "forecast" / "datasets"


def lookup(name: str) -> Dataset:
    """The data set called `name` (any letter case)."""
    found = {k.lower(): d for k, d in DATASETS.items()}.get(name.lower())
    if found is None:
        raise InputError(f"unknown data set '{name}'; known: {', '.join(DATASETS)} (python -m forecast.datasets list)")
    return found


def dataset_path(name: str) -> str:
    """Where a fetched data set lies; the `${dataset_path:NAME}` resolver of the presets. Missing: an InputError saying how to fetch it."""
    d = lookup(name)
    path = cache_dir() / d.file
    if not path.is_file():
        raise InputError(
            f"{d.file} is not in {cache_dir()}; fetch it with python -m forecast.datasets fetch {d.name} "
            "(or set FORECAST_DATA_DIR to a folder holding it)"
        )
    return str(path)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def fetch(name: str, force: bool = False) -> Path:
    """Download a data set into the cache folder, check its sha256 and rename it into place; returns its path."""
    d = lookup(name)
    folder = cache_dir()
    target = folder / d.file
    if target.is_file() and not force:
        if d.sha256 and sha256_of(target) != d.sha256:
            raise InputError(
                f"{target} is not the published {d.file} (sha256 differs); download it again with "
                f"python -m forecast.datasets fetch {d.name} --force"
            )
        print(f"{d.name}: already in {target} (download again with --force)")
        return target
    folder.mkdir(parents=True, exist_ok=True)
    url = d.url()
    print(f"{d.name}: downloading {url}", flush=True)
    handle, name = tempfile.mkstemp(dir=folder, prefix=f".{d.file}.", suffix=".part")
    os.close(handle)
    part = Path(name)
    try:
        got, rows = download(url, part)
        if d.sha256 and got != d.sha256:
            raise InputError(
                f"{url} gave a file with sha256 {got}, not the published {d.sha256}; it was removed. "
                "Try again, or check FORECAST_DATASETS_URL"
            )
        if rows != d.rows:
            raise InputError(
                f"{url} gave {rows:,} data rows where {d.file} has {d.rows:,}; it was removed. Try again, or check FORECAST_DATASETS_URL"
            )
        part.chmod(0o644)  # mkstemp made it private; a data file is not
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    if d.sha256:
        print(f"{d.name}: {rows:,} rows, sha256 verified, saved to {target}")
    else:
        (folder / f"{d.file}.sha256").write_text(f"{got}  {d.file}\n")
        print(
            f"{d.name}: {rows:,} rows, saved to {target}; NOT verified (no published sha256): "
            f"it was {got}, recorded in {d.file}.sha256 beside it"
        )
    return target


def download(url: str, part: Path) -> tuple[str, int]:
    """Stream `url` into `part`; returns its sha256 and its data rows (lines after the header)."""
    digest, lines = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
            while block := response.read(1 << 20):
                digest.update(block)
                lines += block.count(b"\n")
                out.write(block)
    except (urllib.error.URLError, OSError) as e:
        raise InputError(
            f"could not download {url}: {getattr(e, 'reason', e)}. "
            "Check the network, or set FORECAST_DATASETS_URL to a mirror holding the file"
        ) from None
    return digest.hexdigest(), lines - 1


def describe(d: Dataset) -> list[str]:
    where = cache_dir() / d.file
    return [
        f"{d.name}: {d.rows:,} rows every {d.step}, {'fetched' if where.is_file() else 'not fetched'} ({where})",
        f"  source   {d.url()}",
        f"  sha256   {d.sha256 or 'unknown (a fetch records the digest it got)'}",
        f"  licence  {d.licence}",
        f"  cite     {d.citation}",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m forecast.datasets", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the data sets, their sources, digests, licences and citations")
    fetching = commands.add_parser("fetch", help="download one into the cache folder")
    fetching.add_argument("name")
    fetching.add_argument("--force", action="store_true", help="download again even when the file is there")
    commands.add_parser("path", help="print where one lies").add_argument("name")
    args = parser.parse_args(argv)
    with reported():
        if args.command == "list":
            print("\n".join(line for d in DATASETS.values() for line in describe(d)))
        elif args.command == "fetch":
            fetch(args.name, args.force)
        else:
            print(dataset_path(args.name))


if __name__ == "__main__":
    main(sys.argv[1:])
