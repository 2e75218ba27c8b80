"""Print a SHA-256 fingerprint of the envs' behaviour, to show that a refactoring changed nothing.

Runs every baseline of both envs over several configurations and seeds, and hashes everything an
agent or a user can see: observations, rewards, termination flags, action masks, the
fixed-shape values of ``info``, the episode metrics and the request records. Two commits with
the same fingerprint behave the same, bit for bit, on these episodes.

Usage::

    python scripts/fingerprint.py            # one line per configuration, then the total
    python scripts/fingerprint.py --quick    # fewer seeds and requests (for CI)
    python scripts/fingerprint.py --parts    # also a hash per part and per baseline's outcome

``--parts`` says what changed when the total does: the action masks over all baselines, and,
per baseline, everything else (observations, ``info`` values, rewards, episode metrics and
request records). A change of the action space alone, for instance, changes the masks but no
deterministic baseline's episodes.
"""

from __future__ import annotations

import argparse
import hashlib
import warnings
from typing import Any

import gymnasium as gym
import numpy as np

import llmsched_env  # noqa: F401  (registers the envs)
from baselines.registry import make_policy, policy_names

#: (env id, label, keyword arguments): the configurations fingerprinted.
CONFIGS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("llmsched/BatchScheduling-v0", "batch-default", {}),
    ("llmsched/BatchScheduling-v0", "batch-overload", {"load": 1.5, "n_bins": 3}),
    (
        "llmsched/BatchScheduling-v0",
        "batch-in-time-first",
        {"dispatch_order": "oldest-in-time", "n_gpus": 4, "sla": 5.0},
    ),
    ("llmsched/BatchScheduling-v0", "batch-goodput", {"reward": "goodput-tokens", "load": 0.8}),
    ("llmsched/ContinuousBatching-v0", "continuous-default", {}),
    ("llmsched/ContinuousBatching-v0", "continuous-load", {"load": 0.7, "n_gpus": 2}),
    (
        "llmsched/ContinuousBatching-v0",
        "continuous-paged",
        {"kv_allocation": "paged", "chunk_size": 2048, "prefix_caching": True, "load": 0.6},
    ),
    (
        "llmsched/ContinuousBatching-v0",
        "continuous-no-chunk",
        {"chunk_size": None, "reward": "queue"},
    ),
)


def _update(digest: Any, value: Any) -> None:
    """Feed one value into ``digest`` in a form that does not depend on the platform."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "O":
        digest.update(repr(value.tolist()).encode())  # object arrays: values, not pointers
    elif isinstance(value, np.ndarray):
        digest.update(str(value.dtype).encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, float | np.floating):
        digest.update(np.float64(value).tobytes())
    else:
        digest.update(repr(value).encode())


def _info_digest(digest: Any, info: dict[str, Any]) -> None:
    """Hash the scalar and fixed-shape values of ``info`` (queue contents are not hashed)."""
    for key in sorted(info):
        value = info[key]
        if isinstance(value, int | float | bool | np.number | np.bool_ | str):
            digest.update(key.encode())
            _update(digest, value)


def fingerprint_config(
    env_id: str,
    kwargs: dict[str, Any],
    seeds: range,
    n_requests: int,
    parts: dict[str, Any] | None = None,
) -> str:
    """The fingerprint of every baseline's episodes on one configuration.

    Args:
        env_id: The env to make.
        kwargs: Its keyword arguments (besides ``n_requests``).
        seeds: The episodes' seeds.
        n_requests: Requests per episode.
        parts: If given, filled with one SHA-256 object per part: ``masks`` (the action masks
            of every baseline's episodes) and, per baseline, ``episodes/<baseline>`` (the rest).

    Returns:
        The hexadecimal digest of everything.
    """
    digest = hashlib.sha256()
    parts = {} if parts is None else parts
    masks = parts["masks"] = hashlib.sha256()
    env = gym.make(env_id, n_requests=n_requests, **kwargs)
    kind = "batch" if "Batch" in env_id.split("/")[1][:5] else "continuous"
    for name in policy_names(kind):
        for seed in seeds:
            try:
                policy = make_policy(name, env)
            except ValueError as error:  # a baseline that refuses this configuration
                digest.update(f"{name}: {error}".encode())
                parts.setdefault(f"episodes/{name}", hashlib.sha256()).update(str(error).encode())
                continue
            episodes = parts.setdefault(f"episodes/{name}", hashlib.sha256())
            obs, info = env.reset(seed=seed)
            policy.reset()
            done = False
            while not done:
                for d in (digest, episodes):
                    _update(d, obs)
                for d in (digest, masks):
                    _update(d, env.unwrapped.action_masks())
                for d in (digest, episodes):
                    _info_digest(d, info)
                action = policy.act(obs, info)
                obs, reward, terminated, truncated, info = env.step(action)
                for d in (digest, episodes):
                    _update(d, reward)
                    _update(d, (terminated, truncated))
                done = terminated or truncated
            for d in (digest, episodes):
                _update(d, obs)
                _info_digest(d, info)
                for key, value in sorted(env.unwrapped.episode_metrics().items()):
                    d.update(key.encode())
                    _update(d, value)
                records = env.unwrapped.request_records()
                for column in records.columns:
                    d.update(column.encode())
                    _update(d, records[column].to_numpy())
    env.close()
    return digest.hexdigest()


def main() -> None:
    """Print each configuration's fingerprint and the total."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds of 60 requests")
    parser.add_argument(
        "--parts", action="store_true", help="also print each part's and baseline's hash"
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore", UserWarning)  # baselines warn about unsuited configs
    seeds, n_requests = (range(2), 60) if args.quick else (range(3), 200)
    total = hashlib.sha256()
    for env_id, label, kwargs in CONFIGS:
        parts: dict[str, Any] = {}
        value = fingerprint_config(env_id, kwargs, seeds, n_requests, parts)
        total.update(value.encode())
        print(f"{label:24s} {value}")
        if args.parts:
            for part, part_digest in parts.items():
                print(f"  {part:30s} {part_digest.hexdigest()[:16]}")
    print(f"{'total':24s} {total.hexdigest()}")


if __name__ == "__main__":
    main()
