"""The promotion decision, in-process: who serves after a retrain."""

import pytest

from forecast.promotion import decide


@pytest.mark.parametrize("champion_score, best, margin, promoted", [
    (1.0, 0.97, 0.02, "lstm"),     # 3% better than the champion: past a 2% margin
    (1.0, 0.99, 0.02, None),       # 1% better: not enough
    (1.0, 1.20, 0.0, None),        # worse
])
def test_decide_moves_the_alias_only_past_the_margin(champion_score, best, margin, promoted):
    winner, reason = decide({"champion": champion_score, "gru": 1.5, "lstm": best}, margin)
    assert winner == promoted and "margin" in reason
    assert decide({"gru": 2.0, "lstm": 1.0}, 0.5)[0] == "lstm"                 # no champion: the best, directly
