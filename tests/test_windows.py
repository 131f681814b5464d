"""Splits by time, window contents at the borders, train-only scaling, windows as views."""

import numpy as np
import pytest
import torch

from forecast.errors import InputError
from forecast.windows import Scaler, WindowDataset, split_rows, window_origins


def test_fraction_split_is_ordered_and_covers_every_row():
    spans = split_rows(1000, val_fraction=0.1, test_fraction=0.2, borders=None)
    assert spans == {"train": (0, 700), "val": (700, 800), "test": (800, 1000)}


def test_ett_borders_give_the_protocol_window_counts():
    spans = split_rows(17420, 0.1, 0.2, borders=[8640, 11520, 14400])
    valid = np.ones(17420, dtype=bool)
    counts = {k: len(window_origins(v, 96, 96, valid)) for k, v in spans.items()}
    assert counts == {"train": 8640 - 96 - 96 + 1, "val": 2880 - 96 + 1, "test": 2785}
    test = window_origins(spans["test"], 96, 96, valid)
    assert test[0] == 11520 and test[-1] + 96 == 14400  # lookback reaches back into val; last target row 14399


def test_window_contents_at_the_borders():
    T, L, H = 40, 5, 3
    series = torch.arange(T, dtype=torch.float32)[:, None].repeat(1, 2)  # row r holds r
    series[:, 1] *= -1
    origins = window_origins((20, 30), L, H, np.ones(T, bool))
    ds = WindowDataset(series, origins, L, H, target_index=[1])
    x, y = ds[0]
    assert x[:, 0].tolist() == [15, 16, 17, 18, 19] and y[:, 0].tolist() == [-20, -21, -22]
    x, y = ds[len(ds) - 1]
    assert x[-1, 0] == 26 and y[:, 0].tolist() == [-27, -28, -29]  # target ends at the span's last row


def test_windows_touching_a_masked_row_are_dropped():
    valid = np.ones(50, bool)
    valid[20] = False
    origins = window_origins((0, 50), 4, 2, valid)
    assert all(not (o - 4 <= 20 < o + 2) for o in origins)
    assert len(origins) == (50 - 4 - 2 + 1) - 6  # the 6 windows that cover row 20


def test_windows_are_views_of_one_series():
    series = torch.randn(10_000, 3)
    ds = WindowDataset(series, np.arange(96, 10_000 - 24), 96, 24, [0, 1, 2])
    assert ds.windows.untyped_storage().data_ptr() == series.untyped_storage().data_ptr()
    x, y = ds.__getitems__([0, 5, 7])
    assert x.shape == (3, 96, 3) and y.shape == (3, 24, 3)
    assert torch.equal(x[1], series[5:101]) and torch.equal(y[2], series[103:127])


def test_scaler_uses_the_rows_it_is_given_only():
    values = np.concatenate([np.full((100, 1), 1.0) + np.arange(100)[:, None] % 2, np.full((50, 1), 1000.0)])
    scaler = Scaler.fit(values[:100])
    assert scaler.mean[0] == pytest.approx(1.5) and scaler.std[0] == pytest.approx(0.5)
    assert np.allclose(scaler.inverse(scaler.transform(values)), values)


def test_bad_splits_are_input_errors():
    with pytest.raises(InputError, match="borders"):
        split_rows(100, 0.1, 0.2, borders=[50, 40, 90])
    with pytest.raises(InputError, match="series has 100 rows"):
        split_rows(100, 0.1, 0.2, borders=[50, 70, 120])
    with pytest.raises(InputError, match="val_fraction"):
        split_rows(100, 0.6, 0.5, borders=None)


def test_shuffled_order_is_random_samplers_order_from_a_tensor():
    """Same indices in the same order as RandomSampler under the same seed, without listing them all at once."""
    from torch.utils.data import RandomSampler

    from forecast.windows import ShuffledOrder

    data = range(200_003)
    torch.manual_seed(7)
    expected = list(RandomSampler(data))
    torch.manual_seed(7)
    assert list(ShuffledOrder(data)) == expected
    assert sorted(expected) == list(data)
