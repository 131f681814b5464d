"""The recurrent forecaster: one network class for both cells.

GRU and LSTM differ by the `cell` setting alone; input handling, normalisation, decoding and the
output head are shared, so a comparison between them is fair. The network works on standardised
values: scaling to and from the data's units belongs to the data module and the served model.

    x [B, L, C] -> per-window normalisation -> channel handling -> segments -> encoder (GRU|LSTM)
      -> decoder (direct head | parallel segment decoding) -> de-normalisation -> y [B, H, T]
                                                        (with quantiles: y [B, H, T, Q], non-crossing)

B windows, L lookback steps, C input channels, H horizon steps, T target channels.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from forecast.errors import InputError
from forecast.norm import WindowNorm
from forecast.quantiles import levels as quantile_levels
from forecast.quantiles import median_index, monotone

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}
DECODERS = ("direct", "parallel")
_HOUR, _DAY = 3_600_000_000_000, 86_400_000_000_000  # ns
CALENDAR = {"hour": (_HOUR, 24, 0), "weekday": (_DAY, 7, 3)}  # (unit ns, values, shift): 1970-01-01 was a Thursday (Monday = 0)


class RecurrentNet(nn.Module):
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
        quantiles: forecast these levels (0.5 is always added) instead of one point, [B, H, T, Q],
            the head emitting Q values per step made non-crossing by `forecast.quantiles.monotone`;
            None or [] for a point forecast.
        series_embedding: a learned vector per device of a fleet, added to every input segment's
            embedding, so the shared network can tell devices apart. Off by default: without it
            the network has no per-device parameters and forecasts a device it never saw as well
            as one it did (cold start). With it, a device not seen in training (series number -1)
            gets the mean of the learned vectors.
        n_series: devices of the fleet (from the data), the rows of the embedding.
        calendar: known-future calendar features of the forecast's own timestamps, a list of
            "hour" (hour of day) and "weekday" (day of week), or None / [] for none. Each is a
            learned embedding of the calendar value at the start of every output segment (wall-clock
            time of the data's timestamps), added to that segment's query in the parallel decoder, or
            to the final state (the first forecast step's) in the direct one. The network then reads
            each window's `origin` (timestamp of its first forecast step, ns; `Forecaster.forecast`
            requires it, a bare call without it adds no calendar term).
        step: the data's step in ns (from the data); needed with calendar features only.
        static_sizes: the number of category values of each static column of a fleet's devices
            (data.static_columns, from the data), or None / [] for none. Each column gets a learned
            vector per value, added to every input segment's embedding like the device embedding; a
            value not seen in training (code -1), or no codes given, gets the mean of that column's vectors.
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
        dropout: float = 0.1,
        norm: str = "last",
        segment_len: int = 48,
        channel_independent: bool = True,
        channel_embedding: bool = True,
        decoder: str = "parallel",
        quantiles: list[float] | None = None,
        series_embedding: bool = False,
        n_series: int = 0,
        calendar: list[str] | None = None,
        step: int = 0,
        static_sizes: list[int] | None = None,
    ):
        super().__init__()
        _check_choice("model.cell", cell, CELLS)
        _check_choice("model.decoder", decoder, DECODERS)
        for name, value in (("hidden_size", hidden_size), ("num_layers", num_layers), ("segment_len", segment_len)):
            if int(value) < 1:
                raise InputError(f"model.{name} must be a positive integer, got {value}")
        if not 0.0 <= dropout < 1.0:
            raise InputError(f"model.dropout must be in [0, 1), got {dropout}")

        self.cell, self.decoder = cell, decoder
        self.lookback, self.horizon, self.n_inputs = lookback, horizon, n_inputs
        self.register_buffer("target_index", torch.as_tensor(list(target_index), dtype=torch.long), persistent=False)
        self.channel_independent = channel_independent
        self.segment_len = w = segment_len
        self.n_in_segments = math.ceil(lookback / w)
        self.n_out_segments = math.ceil(horizon / w)
        width = 1 if channel_independent else n_inputs  # channels in one series seen by the network
        self.levels = quantile_levels(quantiles)
        out_width = (1 if channel_independent else len(target_index)) * max(len(self.levels), 1)  # values per step

        self.embed_input = nn.Sequential(nn.Linear(w * width, hidden_size), nn.ReLU())
        self.rnn = CELLS[cell](
            hidden_size,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
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
        self.window_norm = WindowNorm(norm, n_inputs, target_index)
        self.series = nn.Embedding(max(int(n_series), 1), hidden_size) if series_embedding else None
        if self.series is not None:
            nn.init.normal_(self.series.weight, std=0.02)
        self.calendar = list(CALENDAR) if calendar is True else list(calendar or [])  # built last, only when asked for
        for name in self.calendar:
            _check_choice("model.calendar", name, CALENDAR)
        if self.calendar and int(step) <= 0:
            raise InputError(
                f"model.calendar={self.calendar} needs the data's step: calendar features are available with data=fleet only.\n"
                "Train with data=fleet, or set model.calendar=false."
            )
        self.step = int(step)
        self.calendar_embed = nn.ModuleDict({name: _embedding(CALENDAR[name][1], hidden_size) for name in self.calendar}) or None
        self.static_embed = nn.ModuleList([_embedding(int(n), hidden_size) for n in static_sizes or []]) or None

    @property
    def uses(self) -> tuple[str, ...]:
        """The optional inputs of `forward` this network reads: series (device numbers), origin (calendar), static."""
        on = {"series": self.series, "origin": self.calendar_embed, "static": self.static_embed}
        return tuple(name for name, module in on.items() if module is not None)

    def forward(
        self, x: torch.Tensor, series: torch.Tensor | None = None, origin: torch.Tensor | None = None, static: torch.Tensor | None = None
    ) -> torch.Tensor:
        B, L, C = x.shape  # x: [B, L, C]; series: [B] device numbers (-1: unseen), used by the embedding only
        # origin: [B] int64 ns, wall-clock time of each window's first forecast step (calendar only); static: [B, S] codes (-1: unseen)
        # without origin a calendar network adds no calendar term (a bare timing of the network; Forecaster.forecast requires it)
        calendar = self._calendar_vectors(origin, B) if self.calendar_embed is not None and origin is not None else None  # [B, M, d]
        x, stats = self.window_norm(x)  # [B, L, C]
        if self.channel_independent:
            x = x.transpose(1, 2).reshape(B * C, L, 1)  # [B*C, L, 1]: one series per channel
        x = self._segments(x)  # [N, S, w*c], N = B*C or B
        z = self.embed_input(x)  # [N, S, d]
        if self.series is not None:
            z = z + self._device_vectors(series, B).repeat_interleave(len(z) // B, dim=0).unsqueeze(1)  # [N, S, d]
        if self.static_embed is not None:
            z = z + self._static_vectors(static, B).repeat_interleave(len(z) // B, dim=0).unsqueeze(1)  # [N, S, d]
        _, state = self.rnn(z)  # [layers, N, d] (LSTM: (h, c))
        if self.decoder == "direct":
            h = state[0] if self.cell == "lstm" else state
            h = h[-1] if calendar is None else h[-1] + calendar[:, 0].repeat_interleave(len(z) // B, dim=0)  # [N, d]
            y = self.head(self.dropout(h))  # [N, H*c_out]
            y = y.reshape(y.shape[0], self.horizon, -1)  # [N, H, c_out] (c_out * Q with quantiles)
        else:
            y = self._decode_parallel(state, B, calendar)  # [N, M*w, c_out]
            y = y[:, : self.horizon]  # [N, H, c_out]
        if self.levels:
            y = monotone(y.reshape(*y.shape[:2], -1, len(self.levels)), median_index(self.levels))  # [N, H, c_out, Q]
        if self.channel_independent:
            y = y.reshape(B, C, self.horizon, *y.shape[3:]).transpose(1, 2)  # [B, H, C] ([B, H, C, Q])
            y = y.index_select(2, self.target_index)  # [B, H, T] ([B, H, T, Q])
        return self.window_norm.inverse(y, stats)  # [B, H, T] ([B, H, T, Q])

    def _device_vectors(self, series: torch.Tensor | None, B: int) -> torch.Tensor:
        """[B, d] each window's device vector; the mean vector for an unseen device (-1, out of range) or no device given."""
        mean = self.series.weight.mean(dim=0)  # [d]
        if series is None:
            return mean.expand(B, -1)
        known = (series >= 0) & (series < self.series.num_embeddings)  # [B]
        vectors = self.series(series.clamp(0, self.series.num_embeddings - 1))  # [B, d]
        return torch.where(known.unsqueeze(1), vectors, mean)

    def _static_vectors(self, static: torch.Tensor | None, B: int) -> torch.Tensor:
        """[B, d] the sum over static columns of each window's value vector; a column's mean vector for an unseen value (-1)
        or none given."""
        total = 0
        for s, embedding in enumerate(self.static_embed):
            codes = static[:, s] if static is not None else torch.full((B,), -1, dtype=torch.long, device=embedding.weight.device)  # [B]
            known = (codes >= 0) & (codes < embedding.num_embeddings)
            vectors = embedding(codes.clamp(0, embedding.num_embeddings - 1))  # [B, d]
            total = total + torch.where(known.unsqueeze(1), vectors, embedding.weight.mean(dim=0))
        return total

    def _calendar_vectors(self, origin: torch.Tensor, B: int) -> torch.Tensor:
        """[B, M, d] the calendar embedding of the first step of every output segment of each window."""
        segment = torch.arange(self.n_out_segments, device=origin.device) * (self.segment_len * self.step)  # [M] ns
        stamps = origin.to(torch.long).view(B, 1) + segment  # [B, M] ns, wall-clock time
        total = 0
        for name, embedding in self.calendar_embed.items():
            unit, size, shift = CALENDAR[name]
            codes = torch.remainder(torch.div(stamps, unit, rounding_mode="floor") + shift, size)  # [B, M]
            total = total + embedding(codes)  # [B, M, d]
        return total

    def _segments(self, x: torch.Tensor) -> torch.Tensor:
        N, L, c = x.shape  # x: [N, L, c]
        pad = self.n_in_segments * self.segment_len - L
        if pad:
            x = torch.cat([x[:, :1].expand(N, pad, c), x], dim=1)  # [N, S*w, c]
        return x.reshape(N, self.n_in_segments, self.segment_len * c)  # [N, S, w*c]

    def _decode_parallel(self, state, B: int, calendar: torch.Tensor | None = None) -> torch.Tensor:
        """One recurrent step per output segment, all segments at once, nothing fed back.

        Every segment starts from the same encoder state and its query is position (+ channel)
        embedding, so each matrix product is computed once per distinct operand (the state once
        per series, the position once per segment, the channel once per channel) and the gate
        sums are broadcast over [B, K, M]. Identical to running the cell on M repeated states.
        """
        h, c = state if self.cell == "lstm" else (state, None)  # [layers, N, d], N = B*K
        d, M, rnn = h.shape[-1], self.n_out_segments, self.rnn
        K = h.shape[1] // B  # channels per window (1 if mixed)
        x = None
        for layer in range(rnn.num_layers):
            w_ih, w_hh, b_ih, b_hh = (getattr(rnn, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            if layer == 0:
                p = self.position.shape[1]
                gi = (self.position @ w_ih[:, :p].T + b_ih).view(1, 1, M, -1)  # [1, 1, M, G]
                if self.channel is not None:
                    gi = gi + (self.channel @ w_ih[:, p:].T).view(1, K, 1, -1)  # [1, K, M, G]
                if calendar is not None:  # each segment's calendar vector added to its query
                    gi = gi + (calendar @ w_ih.T).view(B, 1, M, -1)  # [B, K, M, G]
            else:
                x = nn.functional.dropout(x, rnn.dropout, self.training)
                gi = x @ w_ih.T + b_ih  # [B, K, M, G]
            h_l = h[layer].view(B, K, 1, d)  # [B, K, 1, d]
            gh = h_l @ w_hh.T + b_hh  # [B, K, 1, G]
            if self.cell == "gru":
                (ir, iz, i_n), (hr, hz, hn) = gi.chunk(3, -1), gh.chunk(3, -1)
                r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
                x = (1 - z) * torch.tanh(i_n + r * hn) + z * h_l  # [B, K, M, d]
            else:
                i, f, g, o = (gi + gh).chunk(4, -1)
                c_l = torch.sigmoid(f) * c[layer].view(B, K, 1, d) + torch.sigmoid(i) * torch.tanh(g)
                x = torch.sigmoid(o) * torch.tanh(c_l)  # [B, K, M, d]
        y = self.head(self.dropout(x))  # [B, K, M, w*c_out]
        return y.reshape(B * K, M * self.segment_len, -1)  # [N, M*w, c_out]


def _embedding(rows: int, width: int) -> nn.Embedding:
    embedding = nn.Embedding(max(rows, 1), width)
    nn.init.normal_(embedding.weight, std=0.02)
    return embedding


def _check_choice(name: str, value: str, valid) -> None:
    if value not in valid:
        raise InputError(f"{name}={value!r} is not one of {', '.join(valid)}")
