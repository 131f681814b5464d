"""The forecaster: shapes for every design option, parameter counts, and what normalisation does."""

import itertools

import pytest
import torch

from forecast.errors import InputError
from forecast.networks import count_parameters
from forecast.recurrent import RecurrentNet

OPTIONS = list(itertools.product(["gru", "lstm"], ["none", "last", "revin"], [1, 24], [True, False], ["direct", "parallel"]))


@pytest.mark.parametrize("cell,norm,segment_len,independent,decoder", OPTIONS)
def test_every_option_maps_windows_to_horizon(cell, norm, segment_len, independent, decoder):
    net = RecurrentNet(
        n_inputs=3,
        target_index=[0, 2],
        lookback=50,
        horizon=30,
        cell=cell,
        hidden_size=16,
        num_layers=2,
        norm=norm,
        segment_len=segment_len,
        channel_independent=independent,
        decoder=decoder,
    )
    y = net(torch.randn(4, 50, 3))
    assert y.shape == (4, 30, 2)
    y.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


@pytest.mark.parametrize("hidden,layers,segment", [(64, 2, 1), (128, 1, 24), (37, 3, 12)])
def test_lstm_recurrent_parameters_are_four_thirds_of_gru(hidden, layers, segment):
    sizes = dict(
        n_inputs=7, target_index=list(range(7)), lookback=96, horizon=96, hidden_size=hidden, num_layers=layers, segment_len=segment
    )
    gru = count_parameters(RecurrentNet(cell="gru", **sizes))
    lstm = count_parameters(RecurrentNet(cell="lstm", **sizes))
    assert 3 * lstm["recurrent_params"] == 4 * gru["recurrent_params"]
    # everything outside the cell is shared: the totals differ by the recurrent difference alone
    assert lstm["params"] - gru["params"] == lstm["recurrent_params"] - gru["recurrent_params"]


def test_gru_recurrent_count_matches_the_formula():
    d, L = 32, 2
    net = RecurrentNet(n_inputs=1, target_index=[0], lookback=48, horizon=24, hidden_size=d, num_layers=L)
    assert count_parameters(net)["recurrent_params"] == L * 3 * (d * d + d * d + 2 * d)


def test_last_value_norm_makes_forecasts_shift_with_the_level():
    torch.manual_seed(0)
    net = RecurrentNet(n_inputs=2, target_index=[0, 1], lookback=48, horizon=24, hidden_size=8, norm="last").eval()
    x = torch.randn(3, 48, 2)
    assert torch.allclose(net(x + 5.0), net(x) + 5.0, atol=1e-5)


def test_channel_independence_shares_weights_across_channels():
    torch.manual_seed(0)
    kw = dict(target_index=[0], lookback=48, horizon=24, hidden_size=8, channel_embedding=False)
    one = RecurrentNet(n_inputs=1, **kw).eval()
    three = RecurrentNet(n_inputs=3, **kw).eval()
    assert count_parameters(one) == count_parameters(three)
    three.load_state_dict(one.state_dict())
    x = torch.randn(2, 48, 3)
    assert torch.allclose(three(x), one(x[:, :, :1]), atol=1e-6)


def test_segment_len_not_dividing_lookback_is_padded():
    net = RecurrentNet(n_inputs=2, target_index=[1], lookback=50, horizon=7, hidden_size=8, segment_len=24)
    assert net.n_in_segments == 3 and net(torch.randn(2, 50, 2)).shape == (2, 7, 1)


@pytest.mark.parametrize("bad", [dict(cell="rnn"), dict(norm="zscore"), dict(decoder="ar"), dict(hidden_size=0), dict(dropout=1.0)])
def test_bad_settings_are_input_errors(bad):
    with pytest.raises(InputError, match="model"):
        RecurrentNet(n_inputs=1, target_index=[0], lookback=24, horizon=24, **bad)


@pytest.mark.parametrize("cell,layers,independent", [("gru", 1, True), ("gru", 2, False), ("lstm", 1, True), ("lstm", 3, True)])
def test_factored_parallel_decoder_equals_the_cell_on_repeated_states(cell, layers, independent):
    """The decoder's broadcast products give what nn.GRU / nn.LSTM give on M copies of the state."""
    torch.manual_seed(0)
    net = RecurrentNet(
        n_inputs=3,
        target_index=[0, 1, 2],
        lookback=48,
        horizon=36,
        cell=cell,
        hidden_size=16,
        num_layers=layers,
        segment_len=12,
        channel_independent=independent,
    ).eval()
    B, M = 4, net.n_out_segments
    N = B * 3 if independent else B
    state = tuple(torch.randn(layers, N, 16) for _ in range(2 if cell == "lstm" else 1))
    state = state if cell == "lstm" else state[0]
    query = net.position.unsqueeze(0).expand(N, M, -1)
    if net.channel is not None:
        query = torch.cat([query, net.channel.unsqueeze(1).expand(-1, M, -1).repeat(B, 1, 1)], dim=-1)
    repeat = lambda s: s.repeat_interleave(M, dim=1)  # noqa: E731
    repeated = tuple(map(repeat, state)) if cell == "lstm" else repeat(state)
    out, _ = net.rnn(query.reshape(N * M, 1, -1), repeated)
    expected = net.head(out.squeeze(1)).reshape(N, M * 12, -1)
    assert torch.allclose(net._decode_parallel(state, B), expected, atol=1e-5)
