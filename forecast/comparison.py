"""What a comparison trains: its conditions, seeds, the overrides passed on and each model's hidden size.

`python -m forecast.compare` plans with these functions, then launches one multirun per group.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import hydra
import torch
from hydra.errors import MissingConfigException
from omegaconf import DictConfig

from forecast import config
from forecast.errors import InputError
from forecast.networks import count_parameters

OWN_KEYS = {"models", "seeds", "budget", "trials", "tune", "small_data", "lookbacks", "report_dir"}  # compare's, not train's
SET_HERE = {"seed", "tracking.parent", "tracking.experiment", "hydra.sweep.dir"}  # compare sets these per child
SMALL_DATA = (0.25, 0.1)  # training fractions of small_data=true
TOLERANCE = 0.02  # budget=params: relative mismatch allowed


def pass_on(task: list[str]) -> list[str]:
    """The user's overrides that every training receives: all but compare's own keys and what compare sets."""
    for override in task:
        if config.override_key(override) == "model":
            raise InputError(f"'{override}': name the architectures with models=[...], e.g. models=[gru,lstm]")
    return [o for o in task if config.override_key(o).split(".")[0] not in OWN_KEYS and config.override_key(o) not in SET_HERE]


def seed_list(seeds) -> list[str]:
    """`seeds`: a count n (seeds 0 .. n-1) or an explicit list."""
    if isinstance(seeds, int) and seeds >= 1:
        return [str(s) for s in range(seeds)]
    if not isinstance(seeds, (int, str)) and len(seeds) >= 1 and all(isinstance(s, int) for s in seeds):
        return [str(s) for s in seeds]
    raise InputError(f"seeds={seeds}: give a positive number of seeds (e.g. seeds=3) or a list of integers (seeds=[0,7])")


def plan(cfg: DictConfig, data) -> list[tuple[str, list[str], int]]:
    """The sub-comparisons: (condition tag, overrides of its children, lookback). `base` comes first."""
    conditions = [("base", [], data.lookback)]
    if cfg.small_data:
        conditions += [(f"train-{round(f * 100)}%", [f"++data.train_fraction={f}"], data.lookback) for f in SMALL_DATA]
    for lookback in cfg.lookbacks:
        if int(lookback) != data.lookback:
            config.build(cfg.data, lookback=int(lookback))  # the data must hold windows of this lookback too
            conditions.append((f"lookback-{int(lookback)}", [f"data.lookback={int(lookback)}"], int(lookback)))
    return conditions


def hidden_sizes(budget: str, models: list[str], passed: list[str], model_args: dict) -> dict[str, int | None]:
    """Each model's hidden size (None for a model without one). budget=params solves all but the first
    so that their parameter counts match the first model's within 2%."""
    configs = {m: model_config(m, passed) for m in models}
    sizes = {m: int(c.hidden_size) if "hidden_size" in c else None for m, c in configs.items()}
    if budget == "hidden":
        for c in configs.values():
            count(c, None, model_args)  # a bad model setting fails here, before any run
        return sizes
    reference, target = models[0], count(configs[models[0]], sizes[models[0]], model_args)
    for m in models[1:]:
        if sizes[m] is None:
            raise InputError(f"budget=params: model '{m}' has no model.hidden_size to solve; compare recurrent models or use budget=hidden")
        low, high = 1, 4 * max(sizes[m], 8)  # smallest hidden size whose count reaches the target
        while low < high:
            mid = (low + high) // 2
            low, high = (mid + 1, high) if count(configs[m], mid, model_args) < target else (low, mid)
        sizes[m] = min((low - 1, low), key=lambda h: abs(count(configs[m], h, model_args) - target) if h >= 1 else target)
        mismatch = abs(count(configs[m], sizes[m], model_args) - target) / target
        if mismatch > TOLERANCE:
            raise InputError(
                f"budget=params: no hidden size of '{m}' comes within 2% of the {target:,} parameters "
                f"of '{reference}' (best {mismatch:.1%})"
            )
    return sizes


def model_config(model: str, passed: list[str]) -> DictConfig:
    """conf/model/<model>.yaml with the user's overrides applied."""
    try:
        return hydra.compose("compare", overrides=[*passed, f"model={model}"]).model
    except MissingConfigException:
        known = sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "model").glob("*.yaml"))
        raise InputError(f"models: no model config '{model}' in conf/model; choose from {', '.join(known)}") from None


def count(model_cfg: DictConfig, hidden_size: int | None, model_args: dict) -> int:
    """Trainable parameters of the network `model_cfg` builds for this data (at `hidden_size` if given)."""
    extra = {} if hidden_size is None else {"hidden_size": hidden_size}
    module = config.build(model_cfg, **model_args, **extra)
    return count_parameters(module.net)["params"]


def by_hidden_size(models: list[str], sizes: dict[str, int | None]) -> list[list[str]]:
    """Models that share a hidden size train in one multirun; models solved to other sizes get their own."""
    groups: dict[int | None, list[str]] = {}
    for m in models:
        groups.setdefault(sizes[m], []).append(m)
    return list(groups.values())


def hidden_override(group: list[str], sizes: dict[str, int | None]) -> list[str]:
    size = sizes[group[0]]
    return [] if size is None else [f"model.hidden_size={size}"]


def machine() -> str:
    """Where the comparison ran (the children's hosts are in their `process` tags)."""
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {gpu}, torch {torch.__version__}, Python {platform.python_version()}"
