"""Config helpers shared by the commands: build objects, register resolvers, read overrides.

Importing this module changes nothing; a command calls `register_resolvers()` before Hydra
composes its config.
"""

from __future__ import annotations

import os

import hydra
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import InstantiationException, OverrideParseException
from omegaconf import DictConfig, OmegaConf

from forecast import datasets, sample
from forecast.errors import InputError


def register_resolvers() -> None:
    """The `${name:}` resolvers the configs in conf/ use (idempotent)."""
    OmegaConf.register_new_resolver("sample_csv", sample.default_path, replace=True)
    OmegaConf.register_new_resolver("mixed_precision", mixed_precision, replace=True)
    OmegaConf.register_new_resolver("dataset_path", datasets.dataset_path, replace=True)  # data=etth1 ...: the fetched file
    OmegaConf.register_new_resolver("pid", os.getpid, replace=True, use_cache=True)  # one value per config, as Hydra's ${now:}


def mixed_precision() -> str:
    """trainer=gpu: bf16 where the GPU has it, else float16 (resolved on the machine that trains)."""
    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "16-mixed"


def build(node: DictConfig, **kwargs):
    """`hydra.utils.instantiate`, with our own errors passed through unwrapped."""
    try:
        return hydra.utils.instantiate(node, _convert_="all", **kwargs)  # plain lists and dicts, not OmegaConf nodes
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, InputError):
            raise cause from None
        raise InputError(f"bad setting in {node.get('_target_', 'config')}: {cause or e}") from None


def override_key(override: str) -> str:
    """The key or group an override sets, as Hydra parses it: `+data.x=1` -> `data.x`, `model=gru` -> `model`."""
    return parse_overrides([override])[0].key_or_group


def parse_overrides(overrides: list[str]):
    """Hydra's own parse of command-line overrides; a grammar error is the user's to fix."""
    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException as e:
        raise InputError(
            f"cannot parse the override(s) {' '.join(overrides)}: {str(e).splitlines()[0]}\n"
            "Quote values that hold ; , = or spaces for Hydra, e.g. \"data.sep=';'\"."
        ) from None


def overrides_under(overrides: list[str], *groups: str, exclude: tuple[str, ...] = ()) -> list[str]:
    """The overrides that set something in `groups` (a group itself or any key below it), minus `exclude` keys."""
    kept = []
    for text, parsed in zip(overrides, parse_overrides(overrides)):
        key = parsed.key_or_group
        if any(key == g or key.startswith(g + ".") or key.startswith(g + "/") for g in groups) and key not in exclude:
            kept.append(text)
    return kept
