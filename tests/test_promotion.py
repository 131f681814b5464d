"""The promotion decision, in-process: who serves after a retrain. `decide` is a pure function of the scores."""

import math

import pytest

from forecast.promotion import decide

BASELINE = 1.0  # repeating the last value on the holdout


@pytest.mark.parametrize(
    "champion_score, best, margin, promoted",
    [
        (0.9, 0.87, 0.02, "lstm"),  # 3% better than the champion: past a 2% margin
        (0.9, 0.89, 0.02, None),  # 1% better: not enough
        (0.9, 0.95, 0.0, None),  # worse
    ],
)
def test_decide_moves_the_alias_only_past_the_margin(champion_score, best, margin, promoted):
    decision = decide({"gru": 0.99, "lstm": best}, BASELINE, margin, champion=champion_score)
    assert decision.winner == promoted and "margin" in decision.reason
    assert decision.left_out == {}


def test_no_champion_the_best_challenger_that_beats_the_baseline():
    decision = decide({"gru": 0.8, "lstm": 0.6}, BASELINE, 0.5)
    assert decision.winner == "lstm" and decision.reason.startswith("no champion yet; lstm has the lowest mse_scaled 0.6")


def test_a_challenger_no_better_than_repeating_the_last_value_is_never_promoted():
    decision = decide({"gru": 1.2, "lstm": 1.0}, BASELINE, 0.0)  # equal to the baseline is not better
    assert decision.winner is None
    assert set(decision.left_out) == {"gru", "lstm"} and "does not beat repeating the last value (1)" in decision.left_out["lstm"]
    assert decision.reason.startswith("no challenger can be promoted")
    # nor against a champion: a challenger worse than the baseline does not replace one, however poor the champion
    assert decide({"gru": 1.1}, BASELINE, 0.0, champion=5.0).winner is None


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_challenger_with_a_non_finite_score_is_left_out_with_the_reason(bad):
    decision = decide({"gru": bad, "lstm": 0.7}, BASELINE, 0.02)
    assert decision.winner == "lstm" and decision.left_out == {"gru": f"its mse_scaled is {bad}"}
    assert decide({"gru": bad}, BASELINE, 0.02, champion=0.9).winner is None


@pytest.mark.parametrize("champion", [math.nan, math.inf, "it forecasts 24 steps of a; this data gives 12 steps of a"])
def test_a_champion_that_cannot_be_scored_is_replaced_by_a_finite_better_than_baseline_challenger(champion):
    decision = decide({"gru": 0.8, "lstm": 0.9}, BASELINE, 0.5, champion=champion)
    assert decision.winner == "gru" and "the champion cannot be scored on this holdout" in decision.reason
    assert (str(champion) if isinstance(champion, str) else f"its mse_scaled is {champion}") in decision.reason
    assert decide({"gru": 1.5}, BASELINE, 0.5, champion=champion).winner is None  # but not by one worse than the baseline


def test_a_non_finite_baseline_lets_nothing_be_promoted():
    decision = decide({"gru": 0.5}, math.nan, 0.0)
    assert decision.winner is None and "gru" in decision.left_out


def test_a_champion_with_a_zero_error_is_never_beaten():
    decision = decide({"gru": 0.0}, BASELINE, 0.0, champion=0.0)
    assert decision.winner is None and "-inf%" in decision.reason


def test_no_challengers_keep_what_there_is():
    assert decide({}, BASELINE, 0.0, champion=0.5).winner is None
    assert decide({}, BASELINE, 0.0).reason == "no challenger can be promoted (no challenger was scored)"


def test_the_metric_is_named_in_every_reason():
    decision = decide({"gru": 3.0}, 4.0, 0.2, metric="mae", champion=3.5)
    assert decision.winner is None and "mae 3 vs the champion's 3.5 (+14.3%)" in decision.reason
