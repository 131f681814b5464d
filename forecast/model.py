"""The recurrent forecaster: one network class for both cells.

GRU and LSTM differ by the `cell` setting alone; input handling, normalisation, decoding and the
output head are shared, so a comparison between them is fair. The network works on standardised
values: scaling to and from the data's units belongs to the data module and the served model.

    x [B, L, C] -> per-window normalisation -> channel handling -> segments -> encoder (GRU|LSTM)
      -> decoder (direct head | parallel segment decoding) -> de-normalisation -> y [B, H, T]

B windows, L lookback steps, C input channels, H horizon steps, T target channels.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from forecast.errors import InputError

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}
NORMS = ("none", "last", "revin")
DECODERS = ("direct", "parallel")


class Forecaster(nn.Module):
    """Encode a lookback window with a recurrent cell and emit all horizon steps at once.

    Args:
        n_inputs: channels in each input window (targets and covariates).
        target_index: positions of the target channels among the inputs, in output order.
        lookback: L, steps in each input window.
        horizon: H, steps forecast at once.
        cell: recurrent cell, "gru" or "lstm"; the only difference between the two models.
        hidden_size: width d of the recurrent state and of the segment projection.
        num_layers: stacked recurrent layers.
        dropout: dropout before the output head (and between recurrent layers when stacked).
        norm: per-window normalisation: "none", "last" (subtract the window's last value, add it
            back to the forecast) or "revin" (subtract the window mean, divide by its std, with a
            learned affine map per channel).
        segment_len: w; the lookback is cut into L / w segments of w steps, each projected to d,
            so the encoder takes L / w recurrent steps. 1 gives point-wise input. When w does not
            divide L the oldest steps are padded with the window's first value.
        channel_independent: True: every channel is a separate series through one shared network
            (weights shared across channels); False: channels are mixed in one input vector.
        channel_embedding: with channel independence and the parallel decoder, give each channel a
            learned embedding so the shared network can tell channels apart.
        decoder: "direct" (one linear map from the final state to all H steps) or "parallel"
            (each output segment decoded by one recurrent step from the final state and a learned
            position (and channel) embedding; no predictions are fed back).
    """

    def __init__(
        self,
        n_inputs: int,
        target_index: list[int],
        lookback: int,
        horizon: int,
        cell: str = "gru",
        hidden_size: int = 128,
        num_layers: int = 1,
        dropout: float = 0.0,
        norm: str = "last",
        segment_len: int = 24,
        channel_independent: bool = True,
        channel_embedding: bool = True,
        decoder: str = "parallel",
    ):
        super().__init__()
        _check_choice("model.cell", cell, CELLS)
        _check_choice("model.norm", norm, NORMS)
        _check_choice("model.decoder", decoder, DECODERS)
        for name, value in (("hidden_size", hidden_size), ("num_layers", num_layers), ("segment_len", segment_len)):
            if int(value) < 1:
                raise InputError(f"model.{name} must be a positive integer, got {value}")
        if not 0.0 <= dropout < 1.0:
            raise InputError(f"model.dropout must be in [0, 1), got {dropout}")

        self.cell, self.norm, self.decoder = cell, norm, decoder
        self.lookback, self.horizon, self.n_inputs = lookback, horizon, n_inputs
        self.register_buffer("target_index", torch.as_tensor(list(target_index), dtype=torch.long), persistent=False)
        self.channel_independent = channel_independent
        self.segment_len = w = segment_len
        self.n_in_segments = math.ceil(lookback / w)
        self.n_out_segments = math.ceil(horizon / w)
        width = 1 if channel_independent else n_inputs  # channels in one series seen by the network
        out_width = 1 if channel_independent else len(target_index)

        self.embed_input = nn.Sequential(nn.Linear(w * width, hidden_size), nn.ReLU())
        self.rnn = CELLS[cell](
            hidden_size, hidden_size, num_layers=num_layers, batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        if decoder == "direct":
            self.head = nn.Linear(hidden_size, horizon * out_width)
        else:
            use_channels = channel_independent and channel_embedding
            pos_size = hidden_size // 2 if use_channels else hidden_size
            self.position = nn.Parameter(torch.randn(self.n_out_segments, pos_size) * 0.02)
            self.channel = nn.Parameter(torch.randn(n_inputs, hidden_size - pos_size) * 0.02) if use_channels else None
            self.head = nn.Linear(hidden_size, w * out_width)
        if norm == "revin":
            self.revin_weight = nn.Parameter(torch.ones(n_inputs))
            self.revin_bias = nn.Parameter(torch.zeros(n_inputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape                                        # x: [B, L, C]
        x, stats = self._normalise(x)                            # [B, L, C]
        if self.channel_independent:
            x = x.transpose(1, 2).reshape(B * C, L, 1)           # [B*C, L, 1]: one series per channel
        x = self._segments(x)                                    # [N, S, w*c], N = B*C or B
        z = self.embed_input(x)                                  # [N, S, d]
        _, state = self.rnn(z)                                   # [layers, N, d] (LSTM: (h, c))
        if self.decoder == "direct":
            h = state[0] if self.cell == "lstm" else state
            y = self.head(self.dropout(h[-1]))                   # [N, H*c_out]
            y = y.reshape(y.shape[0], self.horizon, -1)          # [N, H, c_out]
        else:
            y = self._decode_parallel(state, B)                  # [N, M*w, c_out]
            y = y[:, : self.horizon]                             # [N, H, c_out]
        if self.channel_independent:
            y = y.reshape(B, C, self.horizon).transpose(1, 2)    # [B, H, C]
            y = y.index_select(2, self.target_index)             # [B, H, T]
        return self._denormalise(y, stats)                       # [B, H, T]

    def _segments(self, x: torch.Tensor) -> torch.Tensor:
        N, L, c = x.shape                                        # x: [N, L, c]
        pad = self.n_in_segments * self.segment_len - L
        if pad:
            x = torch.cat([x[:, :1].expand(N, pad, c), x], dim=1)  # [N, S*w, c]
        return x.reshape(N, self.n_in_segments, self.segment_len * c)  # [N, S, w*c]

    def _decode_parallel(self, state, B: int) -> torch.Tensor:
        M = self.n_out_segments
        N = (state[0] if self.cell == "lstm" else state).shape[1]
        query = self.position.unsqueeze(0).expand(N, M, -1)      # [N, M, d or d/2]
        if self.channel is not None:
            channel = self.channel.unsqueeze(1).expand(-1, M, -1)  # [C, M, d/2]
            channel = channel.repeat(B, 1, 1)                    # [N, M, d/2], N = B*C, channel-major per window
            query = torch.cat([query, channel], dim=-1)          # [N, M, d]
        query = query.reshape(N * M, 1, -1)                      # [N*M, 1, d]: one recurrent step per segment

        def repeat(h: torch.Tensor) -> torch.Tensor:             # [layers, N, d] -> [layers, N*M, d]
            return h.repeat_interleave(M, dim=1)

        state = tuple(repeat(s) for s in state) if self.cell == "lstm" else repeat(state)
        out, _ = self.rnn(query, state)                          # [N*M, 1, d]
        y = self.head(self.dropout(out.squeeze(1)))              # [N*M, w*c_out]
        return y.reshape(N, M * self.segment_len, -1)            # [N, M*w, c_out]

    def _normalise(self, x: torch.Tensor):
        if self.norm == "last":
            last = x[:, -1:, :].detach()                          # [B, 1, C]
            return x - last, (last,)
        if self.norm == "revin":
            mean = x.mean(dim=1, keepdim=True).detach()           # [B, 1, C]
            std = (x.var(dim=1, keepdim=True, unbiased=False) + 1e-5).sqrt().detach()
            return (x - mean) / std * self.revin_weight + self.revin_bias, (mean, std)
        return x, ()

    def _denormalise(self, y: torch.Tensor, stats) -> torch.Tensor:
        t = self.target_index
        if self.norm == "last":
            return y + stats[0][..., t]
        if self.norm == "revin":
            mean, std = stats
            y = (y - self.revin_bias[t]) / (self.revin_weight[t] + 1e-10)
            return y * std[..., t] + mean[..., t]
        return y


def count_parameters(net: nn.Module) -> dict[str, int]:
    """Trainable parameters in all of `net` and in its recurrent cell alone."""
    total = sum(p.numel() for p in net.parameters() if p.requires_grad)
    rnn = getattr(net, "rnn", None)
    recurrent = sum(p.numel() for p in rnn.parameters()) if rnn is not None else 0
    return {"params": total, "recurrent_params": recurrent}


def _check_choice(name: str, value: str, valid) -> None:
    if value not in valid:
        raise InputError(f"{name}={value!r} is not one of {', '.join(valid)}")
