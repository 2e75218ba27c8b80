import sys

import pytest

from agents.extras import INSTALL_HINT, AgentsExtraMissingError, require_agents_extra


@pytest.fixture
def without_sb3(monkeypatch):
    """Make ``import stable_baselines3`` fail as if the agents extra were not installed."""
    monkeypatch.setitem(sys.modules, "stable_baselines3", None)


def test_require_agents_extra_names_the_package_and_the_install_command(without_sb3):
    with pytest.raises(AgentsExtraMissingError, match="stable_baselines3") as error:
        require_agents_extra()
    assert INSTALL_HINT in str(error.value)
    assert isinstance(error.value, ImportError)


def test_train_fails_clearly_without_the_extra(without_sb3, tmp_path):
    from agents.training import train

    with pytest.raises(AgentsExtraMissingError, match=r"llmsched-env\[agents\]"):
        train("batch", out=tmp_path / "run", steps=10)
    assert not (tmp_path / "run").exists()  # nothing written


def test_cli_train_reports_the_missing_extra(without_sb3, tmp_path, capsys):
    from llmsched_env.cli import main

    code = main(["train", "--steps", "10", "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 2
    assert INSTALL_HINT in capsys.readouterr().err


def test_loading_an_agent_fails_clearly_without_the_extra(without_sb3, tiny_run):
    import gymnasium as gym

    from agents.policy import AgentPolicyFactory

    env = gym.make("llmsched/BatchScheduling-v0", workload="demo2", arrival_rate=4.0, n_requests=40)
    with pytest.raises(AgentsExtraMissingError, match=INSTALL_HINT.replace("[", r"\[")):
        AgentPolicyFactory(str(tiny_run.run_dir), which="final", torch_threads=None)(env)


def test_listing_algorithms_and_scenarios_needs_no_extra(without_sb3):
    from agents.algorithms import ALGOS, get_algo
    from agents.scenarios import SCENARIOS, get_scenario

    assert get_algo("dqn").flat_action and "maskable-ppo" in ALGOS
    assert get_scenario("batch-default").env_id == "llmsched/BatchScheduling-v0"
    assert len(SCENARIOS) >= 4
