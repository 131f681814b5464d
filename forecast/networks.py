"""Every network a model config can name (`model.network`), built from the data's shapes."""

from __future__ import annotations

import re

from torch import nn

from forecast.baselines import LastValue, LinearNet, SeasonalNaive
from forecast.errors import InputError
from forecast.recurrent import RecurrentNet

NETWORKS = {"recurrent": RecurrentNet, "linear": LinearNet, "last_value": LastValue, "seasonal_naive": SeasonalNaive}
QUANTILE_NETWORKS = ("recurrent", "linear")  # emit [B, H, T, Q] given quantiles; the others get theirs from residuals


# inputs only some networks read: the setting that asks for each
INPUT_SETTINGS = {"static_sizes": "data.static_columns", "n_series": "model.series_embedding", "calendar": "model.calendar"}


def build_network(network: str, **kwargs) -> nn.Module:
    if network not in NETWORKS:
        raise InputError(f"model.network={network!r} is not one of {', '.join(NETWORKS)}")
    try:
        return NETWORKS[network](**kwargs)
    except TypeError as e:  # a setting the network does not take
        for key, setting in INPUT_SETTINGS.items():
            if f"'{key}'" in str(e):
                raise InputError(
                    f"model.network={network} does not read the inputs that {setting} asks for; only model.network=recurrent does.\n"
                    f"Unset {setting} for this model, or train model=gru / model=lstm."
                ) from None
        raise InputError(f"model.network={network}: " + re.sub(r"^[\w.]*__init__[(][)] ", "", str(e))) from None


def architecture(network: str, net: nn.Module) -> str:
    """The MLflow `architecture` tag: the cell of a recurrent network, else the network's name."""
    return net.cell if network == "recurrent" else network


def count_parameters(net: nn.Module) -> dict[str, int]:
    """Trainable parameters in all of `net` and in its recurrent cell alone."""
    total = sum(p.numel() for p in net.parameters() if p.requires_grad)
    rnn = getattr(net, "rnn", None)
    recurrent = sum(p.numel() for p in rnn.parameters()) if rnn is not None else 0
    return {"params": total, "recurrent_params": recurrent}
