"""Every network a model config can name (`model.network`), built from the data's shapes."""

from __future__ import annotations

from torch import nn

from forecast.baselines import LastValue, LinearForecaster, SeasonalNaive
from forecast.errors import InputError
from forecast.model import Forecaster

NETWORKS = {"recurrent": Forecaster, "linear": LinearForecaster, "last_value": LastValue, "seasonal_naive": SeasonalNaive}


def build_network(network: str, **kwargs) -> nn.Module:
    if network not in NETWORKS:
        raise InputError(f"model.network={network!r} is not one of {', '.join(NETWORKS)}")
    try:
        return NETWORKS[network](**kwargs)
    except TypeError as e:  # a setting the network does not take
        raise InputError(f"model.network={network}: {e}".replace("__init__() ", "")) from None


def architecture(network: str, net: nn.Module) -> str:
    """The MLflow `architecture` tag: the cell of a recurrent network, else the network's name."""
    return net.cell if network == "recurrent" else network
