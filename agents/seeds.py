"""Seed ranges that keep training, model selection and reported evaluation apart.

Every episode of an environment is determined by the seed of its ``reset`` (see
:mod:`llmsched_env.evaluation`), so disjoint seed ranges give disjoint episodes:

* **training** seeds are below :data:`VALIDATION_SEED_START` (9,000). The ``n_envs`` training
  environments of a run with training seed ``s`` are first reset with seeds
  ``s * n_envs, ..., s * n_envs + n_envs - 1`` and then continue their own random generators
  (stable-baselines3 resets them without a seed), so runs with different training seeds start
  from different episodes;
* **validation** seeds, from 9,000 to 9,999, are what the evaluation callback uses during
  training to compare the agent with the best baseline and to keep the best model;
* **evaluation** seeds start at :data:`EVAL_SEED_START` (10,000): the seeds of every reported
  comparison (``llmsched compare``, ``llmsched evaluate``).

Seeds make episodes distinct, not workloads independent: trace-based workloads draw their
episodes as windows of one recorded trace, so a training window and an evaluation window may
share requests (with different length predictions), as two days of traffic share a service.
"""

from __future__ import annotations

from llmsched_env import arguments

#: First seed of the evaluation (test) range; reported comparisons use seeds from here.
EVAL_SEED_START = 10_000
#: First seed of the validation range used for model selection during training.
VALIDATION_SEED_START = 9_000
#: Training environment seeds stay below this bound.
TRAIN_SEED_LIMIT = VALIDATION_SEED_START


def training_env_seeds(seed: int, n_envs: int) -> list[int]:
    """Seeds of the first reset of each training environment of a run.

    Args:
        seed: The run's training seed, ``>= 0``.
        n_envs: Number of parallel training environments, ``>= 1``.

    Returns:
        ``[seed * n_envs + i for i in range(n_envs)]``, all below :data:`TRAIN_SEED_LIMIT`.

    Raises:
        ValueError: If an argument is out of range or the seeds would reach the validation range.

    Example:
        >>> training_env_seeds(2, 4)
        [8, 9, 10, 11]
    """
    n_envs = arguments.integer(
        "",
        "n_envs",
        n_envs,
        minimum=1,
        maximum=TRAIN_SEED_LIMIT,
        reason=f"training env seeds stay below {TRAIN_SEED_LIMIT}",
    )
    largest = TRAIN_SEED_LIMIT // n_envs - 1
    reason = f"with n_envs={n_envs}, so that training env seeds stay below {TRAIN_SEED_LIMIT}"
    seed = arguments.integer("", "seed", seed, minimum=0, maximum=largest, reason=reason)
    return [seed * n_envs + i for i in range(n_envs)]


def validation_seeds(n: int) -> list[int]:
    """The first ``n`` validation seeds (for the evaluation callback).

    Raises:
        ValueError: If ``n`` is not in ``[1, 1000]``.
    """
    largest = EVAL_SEED_START - VALIDATION_SEED_START
    n = arguments.integer("", "n", n, minimum=1, maximum=largest)
    return list(range(VALIDATION_SEED_START, VALIDATION_SEED_START + n))


def evaluation_seeds(n: int = 20, first: int = EVAL_SEED_START) -> list[int]:
    """``n`` consecutive evaluation seeds starting at ``first`` (default: 20 from 10,000).

    Raises:
        ValueError: If ``n < 1`` or ``first`` is below :data:`EVAL_SEED_START`.
    """
    n = arguments.integer("", "n", n, minimum=1)
    reason = "evaluation seeds never overlap training or validation seeds"
    first = arguments.integer("", "first", first, minimum=EVAL_SEED_START, reason=reason)
    return list(range(first, first + n))
