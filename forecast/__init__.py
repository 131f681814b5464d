"""forecast: GRU and LSTM forecasters for sensor series, configured by Hydra, tracked in MLflow."""

__version__ = "0.1.0"
