"""forecast.speed: the thread setting, interleaved step timing, and the speed verdict that load cannot sway."""

import pytest
import torch
from conftest import REPO
from hydra import compose, initialize_config_dir

from forecast import comparison_report, speed, stats
from forecast.baselines import LastValue
from forecast.errors import InputError
from forecast.recurrent import RecurrentNet


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_setting_sets_torch_threads_and_refuses_bad_values(restore_threads):
    speed.use_threads(1)
    assert torch.get_num_threads() == 1
    speed.use_threads(None)  # torch's default: left as it is
    assert torch.get_num_threads() == 1
    for bad in (0, -2, "two", 1.5, True):
        with pytest.raises(InputError, match=r"threads=.*positive number of threads"):
            speed.use_threads(bad)


def test_the_training_config_defaults_to_one_thread():
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        assert compose("train").threads == 1
        assert compose("compare").threads == 1
        assert compose("train", overrides=["threads=null"]).threads is None


class FakeClock:
    """A clock that only the steps advance: step cost x the load of the current round."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_load_that_comes_and_goes_falls_on_both_networks_alike():
    clock, loads, order = FakeClock(), [1, 12, 2, 40, 1, 3], []  # the machine's load changes from round to round

    def step(name, cost):
        def run():
            clock.now += cost * loads[len(order) // 2 % len(loads)]  # both steps of a round see its load
            order.append(name)

        return run

    times = speed.interleaved({"gru": step("gru", 0.020), "lstm": step("lstm", 0.010)}, pairs=20, warmup=2, clock=clock)
    assert len(times["gru"]) == len(times["lstm"]) == 20
    assert order[:6] == ["gru", "lstm", "lstm", "gru", "gru", "lstm"]  # the order turns every round
    spread = speed.ratio_spread(times["gru"], times["lstm"])
    assert spread["ratio"] == pytest.approx(2.0) and spread["ratio_q25"] == pytest.approx(2.0)
    assert max(times["gru"]) / min(times["gru"]) == pytest.approx(40)  # the epochs-apart view would see a 40x swing
    assert speed.verdict("gru", "lstm", spread, comparison_report.name) == (
        "the LSTM trains 2.00x faster per step than the GRU on this machine (IQR 2.00-2.00)"
    )


def test_a_ratio_the_noise_could_explain_is_no_difference():
    a = [0.010, 0.012, 0.009, 0.011, 0.010, 0.013, 0.009, 0.010]
    b = [0.011, 0.010, 0.010, 0.012, 0.009, 0.011, 0.010, 0.0095]
    spread = speed.ratio_spread(a, b)
    assert spread["ratio_q25"] < 1 < spread["ratio_q75"]
    text = speed.verdict("gru", "lstm", spread, comparison_report.name)
    assert text.startswith("no difference in training speed is measurable on this machine (GRU / LSTM step time")


def test_the_faster_reference_is_named_with_its_inverted_interquartile_range():
    spread = {"ratio": 0.8, "ratio_q25": 0.75, "ratio_q75": 0.9}
    assert speed.verdict("gru", "lstm", spread, comparison_report.name) == (
        "the GRU trains 1.25x faster per step than the LSTM on this machine (IQR 1.11-1.33)"
    )


def test_measure_times_trainable_networks_and_names_those_with_nothing_to_train():
    nets = {"gru": RecurrentNet(3, [0], 24, 12, hidden_size=8, segment_len=12), "last_value": LastValue(3, [0], 24, 12)}
    measured = speed.measure(nets, batch=16, lookback=24, n_inputs=3, pairs=3)
    assert measured["untrainable"] == ["last_value"] and list(measured["step_ms"]) == ["gru"]
    assert len(measured["times"]["gru"]) == 3 and measured["step_ms"]["gru"] > 0


def test_a_baseline_without_parameters_gets_a_verdict_without_nan():
    test = stats.PairedTest(mean_diff=-0.1, statistic=-5.0, p_value=1e-6, lag=23, n=500)
    v = comparison_report.Verdict("gru", "last_value", 0.5, 0.9, test, None, "there is no training speed to compare", 3824.0, 0.0)
    text = comparison_report.sentence(v, "sample")
    assert "nan" not in text and "inf" not in text
    assert text == (
        "On sample the GRU is 44.4% more accurate (its test scaled MSE is 44.4% lower, Diebold-Mariano p < 0.001); "
        "the last_value has no parameters; there is no training speed to compare."
    )
