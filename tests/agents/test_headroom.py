import numpy as np
import pytest

from agents.headroom import lookahead_episode, lookahead_returns, main, summary_lines
from llmsched_env.kinds import ENV_IDS
from tests.agents.conftest import TINY_ENVS

BATCH = ENV_IDS["batch"]


def test_lookahead_is_never_worse_than_the_stateless_baseline_it_extends():
    for seed in (1, 2, 3):
        ahead, alone = lookahead_episode(BATCH, TINY_ENVS["batch"], seed)
        assert ahead >= alone


def test_lookahead_of_an_episode_is_reproducible():
    assert lookahead_episode(BATCH, TINY_ENVS["batch"], 5) == lookahead_episode(
        BATCH, TINY_ENVS["batch"], 5
    )


def test_summary_gives_both_means_and_the_paired_difference(monkeypatch, capsys):
    import agents.headroom as headroom

    def fake(env_id, env_kwargs, seed, base):
        return 10.0 + seed, 8.0 + seed

    monkeypatch.setattr(headroom, "lookahead_episode", fake)
    returns = lookahead_returns("batch-default", [1, 2, 3])
    assert returns["seed"].tolist() == [1, 2, 3]
    assert np.allclose(returns["lookahead"] - returns["base"], 2.0)
    lines = summary_lines(returns)
    assert lines[0].startswith("lookahead: 12.0") and lines[1].startswith("multibin-wc: 10.0")
    assert lines[2] == "paired lookahead - multibin-wc: +2.0 +/- 0.0"
    main(["--scenario", "batch-default", "--first-seed", "8000", "--seeds", "2"])
    assert "paired lookahead - multibin-wc: +2.0" in capsys.readouterr().out


def test_the_command_refuses_no_seeds(capsys):
    with pytest.raises(SystemExit):
        main(["--seeds", "0"])
    assert "--seeds: expected an integer >= 1, got '0'" in capsys.readouterr().err
