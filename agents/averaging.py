"""Weight averaging: the mean of a policy's weights over the last part of training.

A policy network trained with a constant learning rate keeps moving around a good region
instead of settling in it, and on states unlike the training ones (a workload never seen in
training) neighbouring snapshots can act very differently. Averaging the weights of snapshots
taken late in training (stochastic weight averaging: Izmailov et al., "Averaging Weights Leads
to Wider Optima and Better Generalization", UAI 2018; in deep RL, Nikishin et al., "Improving
Stability in Deep Reinforcement Learning with Weight Averaging", 2018) gives one network near
the middle of that region. The running mean is ``torch.optim.swa_utils.AveragedModel``
(:class:`agents.callbacks.WeightAveragingCallback`).

A run trained with ``weight_averaging`` (a training setting, :func:`WeightAveraging.from_setting`)
takes a snapshot every ``every`` steps from step ``start`` on (the same steps as the checkpoints
when ``every`` is the checkpoint frequency) and saves their mean as ``averaged_model.zip`` beside
``model.zip``; it is used with the final observation statistics (``vecnormalize.pkl``).
``llmsched compare --model averaged`` scores it. A resumed session (``llmsched train
--resume``) replaces it with the mean of the snapshots it takes itself, if it takes any.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmsched_env import arguments

#: File of the averaged model in a run directory.
AVERAGED_MODEL_FILE = "averaged_model.zip"


@dataclass(frozen=True)
class WeightAveraging:
    """When to take the snapshots whose weights are averaged.

    Attributes:
        start: Snapshots are taken from this training step on (steps counted over the run).
        every: Steps between snapshots, counted from the start of the training session as the
            checkpoints are (a first session: snapshots at the multiples of ``every`` from
            ``start`` on). The envs step together, so like the checkpoints' frequency it is
            taken in whole steps of all ``n_envs`` envs, rounded down: with 16 envs, ``every``
            1,000 snapshots at steps 992, 1,984, ... (the recipe's 100,000 divides evenly).
    """

    start: int
    every: int

    @classmethod
    def from_setting(cls, setting: Any) -> WeightAveraging | None:
        """Read the ``weight_averaging`` training setting: ``None`` or ``{"start", "every"}``.

        Raises:
            ValueError: If the setting is not a mapping of exactly those keys to integers
                (``start >= 0``, ``every >= 1``); the message names the bad value.

        Example:
            >>> WeightAveraging.from_setting({"start": 600_000, "every": 100_000})
            WeightAveraging(start=600000, every=100000)
        """
        if setting is None:
            return None
        if not isinstance(setting, Mapping) or set(setting) != {"start", "every"}:
            raise ValueError(
                "weight_averaging must be null or a mapping with the keys 'start' and 'every' "
                f"(steps), got {setting!r}"
            )
        return cls(
            arguments.integer("weight_averaging", "start", setting["start"], minimum=0),
            arguments.integer("weight_averaging", "every", setting["every"], minimum=1),
        )

    def as_setting(self) -> dict[str, int]:
        """The plain (JSON) form of the setting."""
        return {"start": self.start, "every": self.every}
