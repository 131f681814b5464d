"""The LightningModule: a network, its loss, its optimiser and its learning-rate schedule.

It sees standardised windows only; the scaler travels with the trained network in the saved
`Forecaster` (forecast/forecaster.py), not here.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from lightning.pytorch import Callback
from torch import nn

from forecast.errors import InputError, JobFailed
from forecast.networks import QUANTILE_NETWORKS, architecture, build_network
from forecast.quantiles import PinballLoss, median_index
from forecast.quantiles import levels as quantile_levels

LOSSES = {"mse": nn.MSELoss, "mae": nn.L1Loss, "huber": nn.HuberLoss}
SCHEDULES = ("none", "cosine", "plateau")


class ForecastModule(L.LightningModule):
    """Train a network (`forecast.networks`) on standardised windows.

    Args:
        lookback: L, input steps per window (from the data).
        horizon: H, steps forecast at once (from the data).
        n_inputs: input channels (from the data).
        target_index: positions of the targets among the inputs (from the data).
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        schedule: learning-rate schedule: "none", "cosine" (annealed to zero over max_epochs) or
            "plateau" (halved when val/loss stalls for two epochs).
        loss: training loss on standardised values: "mse", "mae" or "huber". Validation always
            reports MSE (of the median with quantiles), the benchmark metric.
        quantiles: forecast these levels (0.5 is always added; None or [] for a point forecast). A
            network that can (recurrent, linear) then emits [B, H, T, Q] trained on the mean pinball
            loss (in place of `loss`); the last-value and seasonal-naive baselines stay point
            forecasts and get their levels from validation residuals (`forecast.quantiles`).
        calibration_window: the share of the validation windows, the most recent, that calibrate
            the quantiles (and at least as many as the outermost level needs, 39 for 0.025). The
            default 1 (all of them) is the split-conformal guarantee's setting; less follows a drifting
            series more closely, from fewer windows (docs/quantiles.md, "Calibration").
        network: which network: "recurrent" (`forecast.recurrent.RecurrentNet`), or a baseline:
            "linear", "last_value", "seasonal_naive" (`forecast.baselines`).
        n_series: devices of a fleet (from the data); passed to a network with a device embedding
            (model.series_embedding=true), ignored otherwise.
        step: the data's step in ns (fleets, from the data); passed to a network with calendar
            features (model.calendar), ignored otherwise.
        static_sizes: category values of each static column of a fleet (data.static_columns, from
            the data); passed to the network, which learns a vector per value. None or []: none.
        **net: the network's hyper-parameters (cell, hidden_size, ...), see its class.
    """

    def __init__(
        self,
        lookback: int,
        horizon: int,
        n_inputs: int,
        target_index: list[int],
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        schedule: str = "cosine",
        loss: str = "mae",
        network: str = "recurrent",
        quantiles: list[float] | None = None,
        calibration_window: float = 1.0,
        n_series: int = 0,
        step: int = 0,
        static_sizes: list[int] | None = None,
        **net,
    ):
        super().__init__()
        if loss not in LOSSES:
            raise InputError(f"model.loss={loss!r} is not one of {', '.join(LOSSES)}")
        if schedule not in SCHEDULES:
            raise InputError(f"model.schedule={schedule!r} is not one of {', '.join(SCHEDULES)}")
        if not 0 < lr < math.inf:
            raise InputError(f"model.lr must be a positive finite number, got {lr}")
        if not 0 <= weight_decay < math.inf:
            raise InputError(f"model.weight_decay must be zero or a positive finite number, got {weight_decay}")
        self.save_hyperparameters(logger=False)
        self.levels = quantile_levels(quantiles)  # [] for a point model
        if not (isinstance(calibration_window, (int, float)) and 0 < calibration_window <= 1):
            raise InputError(f"model.calibration_window={calibration_window}: give a share of the validation windows in (0, 1]")
        if self.levels and network in QUANTILE_NETWORKS:  # the network emits the levels
            net = {**net, "quantiles": self.levels}
        net |= {"n_series": n_series} if net.get("series_embedding") else {}
        net |= {"step": step} if net.get("calendar") else {}
        net |= {"static_sizes": list(static_sizes)} if static_sizes else {}
        self.net_kwargs = {"network": network, **net}
        shapes = {"n_inputs": n_inputs, "target_index": list(target_index), "lookback": lookback, "horizon": horizon}
        self.net_args = {**self.net_kwargs, **shapes}  # what rebuilds the network (forecast.networks.build_network)
        self.net = build_network(network, n_inputs=n_inputs, target_index=target_index, lookback=lookback, horizon=horizon, **net)
        self.architecture = architecture(network, self.net)
        quantile = "quantiles" in net
        self.loss = PinballLoss(self.levels) if quantile else LOSSES[loss]()
        self.cell_loss = PinballLoss(self.levels, reduction="none") if quantile else LOSSES[loss](reduction="none")

    def forward(self, x: torch.Tensor, series: torch.Tensor | None = None, **extra) -> torch.Tensor:
        """x [B, L, C] -> [B, H, T] ([B, H, T, Q] with quantiles); series [B] device numbers and `extra` (origin [B],
        static [B, S]: calendar and static inputs) reach a network that reads them (its `uses`), nothing else."""
        given = {"series": series, **extra}
        known = {k: v for k, v in given.items() if v is not None and k in getattr(self.net, "uses", ())}
        return self.net(x, **known)

    def training_step(self, batch, batch_idx):
        x, y, *series = batch  # [B, L, C], [B, H, T] (a fleet's: NaN where masked), [B] device numbers (fleets), {origin, static}
        pred = self(x, *series[:1], **(series[1] if len(series) > 1 else {}))
        loss = self.loss(pred, y) if not series else _masked(self.cell_loss, pred, y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=len(x))
        return loss

    def validation_step(self, batch, batch_idx):
        x, y, *series = batch
        pred = self(x, *series[:1], **(series[1] if len(series) > 1 else {}))  # [B, H, T] ([B, H, T, Q]: the median is the point)
        pred = pred[..., median_index(self.levels)] if pred.dim() == 4 else pred  # [B, H, T]
        mse = nn.functional.mse_loss(pred, y) if not series else _masked(nn.MSELoss(reduction="none"), pred, y)
        self.log("val/loss", mse, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=len(x))

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.schedule == "cosine":
            epochs = max(int(self.trainer.max_epochs or 1), 1)
            return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)}
        if hp.schedule == "plateau":
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=2)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": plateau, "monitor": "val/loss"}}
        return optimizer


def _masked(loss: nn.Module, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean of an element-wise loss over the cells where y is not NaN (masked fleet channels); no host sync."""
    valid = ~torch.isnan(y)  # [B, H, T]
    cells = loss(pred, torch.where(valid, y, 0.0)) * valid  # [B, H, T] (a quantile loss: averaged over levels), 0 where masked
    return cells.sum() / valid.sum().clamp(min=1)


class StopOnNonFinite(Callback):
    """Fail the training at the end of an epoch whose train/loss or val/loss is NaN or infinite.

    A mean over the epoch is non-finite as soon as one step's loss was, so no non-finite step goes
    unnoticed; checking once an epoch keeps a GPU from waiting on the host at every step. Place it
    before the callbacks that record the epoch: the failing epoch is then never logged.
    """

    def on_train_epoch_end(self, trainer, module) -> None:
        for key in ("train/loss", "val/loss"):
            value = trainer.callback_metrics.get(key)
            if value is not None and not bool(torch.isfinite(value).all()):
                raise JobFailed(
                    f"{key} became {float(value)} in epoch {trainer.current_epoch + 1}, so training stopped; "
                    "lower model.lr, or look for extreme values in the data"
                )
