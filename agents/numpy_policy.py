"""A trained actor network run with numpy alone, so shipped agents act without torch.

A stable-baselines3 ``MlpPolicy`` of an actor-critic algorithm (MaskablePPO, PPO, A2C) acts
deterministically by one small computation: flatten the (normalised) observation, run it
through the policy MLP (linear layers with ``tanh`` or ``relu``), map it to action logits with
``action_net``, set the logits of masked actions to a very low value, and take the argmax of
each action component (``MultiDiscrete``) or of the one component (``Discrete``).
:func:`export_numpy_policy` writes those weights, together with the frozen ``VecNormalize``
statistics, into a ``.npz`` file beside the model's ``.zip``; :class:`NumpyPolicy` loads it
and offers the subset of SB3's ``predict`` signature that :class:`agents.policy.AgentPolicy`
calls. The export records the SHA-256 of the ``.zip`` it was made from, so a stale export
(the model retrained or replaced) is detected instead of silently used.

Exporting needs the ``agents`` extra (it loads the SB3 model); loading and acting need numpy
only. ``tests/agents/test_numpy_policy.py`` checks that the numpy actions equal the torch
model's at every step of full evaluation episodes of the shipped agents. Both compute in
float32, in different orders, so their logits differ by up to a few 1e-6: an observation at
which two allowed actions' logits nearly tie can get different actions (found only at
observations constructed to sit on the boundary, never in those episodes).

Example:
    >>> from agents.compare import pretrained_dir
    >>> policy = NumpyPolicy.load(numpy_path(pretrained_dir("batch-default") / "model.zip"))
    >>> policy.action_space
    MultiDiscrete([5 7])
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

#: Version of the ``.npz`` layout written by :func:`export_numpy_policy`.
FORMAT_VERSION = 1

#: Activation functions the numpy forward pass implements, by the name SB3's torch module has.
ACTIVATIONS = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, np.float32(0.0)),
}

#: The logit masked actions get, as sb3-contrib's ``MaskableCategorical`` sets it.
MASKED_LOGIT = np.float32(-1e8)


def numpy_path(model_path: str | Path) -> Path:
    """The ``.npz`` export that belongs to a model ``.zip`` (same name, other suffix)."""
    return Path(model_path).with_suffix(".npz")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass(frozen=True)
class NumpyPolicy:
    """The deterministic actor of an exported SB3 policy.

    Attributes:
        weights: Weight matrices of the policy MLP then of ``action_net``, each
            ``(out_features, in_features)`` as torch stores them, float32.
        biases: Their bias vectors, float32.
        activation: Name of the hidden layers' activation (:data:`ACTIVATIONS`).
        observation_space: The observation space the model was trained on.
        action_space: Its action space (``MultiDiscrete`` or ``Discrete``).
        obs_mean: ``VecNormalize`` running mean, or ``None`` when the run did not normalise.
        obs_var: Its running variance (``None`` likewise).
        clip_obs: Normalised observations are clipped to ``[-clip_obs, clip_obs]``.
        epsilon: Added to the variance before the square root.
        model_sha256: SHA-256 of the model ``.zip`` the weights were exported from.
    """

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    activation: str
    observation_space: gym.spaces.Box
    action_space: gym.spaces.MultiDiscrete | gym.spaces.Discrete
    obs_mean: np.ndarray | None
    obs_var: np.ndarray | None
    clip_obs: float
    epsilon: float
    model_sha256: str

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}"
            )
        if len(self.weights) != len(self.biases) or not self.weights:
            raise ValueError(
                f"need one bias per weight matrix and at least one layer, got "
                f"{len(self.weights)} weights and {len(self.biases)} biases"
            )
        if self.weights[-1].shape[0] != self._n_logits:
            raise ValueError(
                f"the last layer has {self.weights[-1].shape[0]} outputs, but the action space "
                f"{self.action_space} needs {self._n_logits}"
            )

    @property
    def _nvec(self) -> tuple[int, ...]:
        if isinstance(self.action_space, gym.spaces.Discrete):
            return (int(self.action_space.n),)
        return tuple(int(n) for n in self.action_space.nvec)

    @property
    def _n_logits(self) -> int:
        return int(sum(self._nvec))

    @classmethod
    def load(cls, path: str | Path, expected_sha256: str | None = None) -> NumpyPolicy:
        """Load an export written by :func:`export_numpy_policy`.

        Args:
            path: The ``.npz`` file.
            expected_sha256: When given, the SHA-256 of the model ``.zip`` the export must come
                from (a mismatch means a stale export).

        Raises:
            ValueError: If the file is not an export of a known format version, or is stale.
        """
        with np.load(path, allow_pickle=False) as data:
            version = int(data["format_version"]) if "format_version" in data else None
            if version != FORMAT_VERSION:
                raise ValueError(
                    f"{str(path)!r} is not a numpy policy export of format_version "
                    f"{FORMAT_VERSION} (found {version!r}); re-export it with "
                    "scripts/export_numpy_policy.py"
                )
            n_layers = int(data["n_layers"])
            weights = tuple(data[f"weight_{i}"].astype(np.float32) for i in range(n_layers))
            biases = tuple(data[f"bias_{i}"].astype(np.float32) for i in range(n_layers))
            obs_space = gym.spaces.Box(
                data["obs_low"].astype(np.float32), data["obs_high"].astype(np.float32)
            )
            nvec = data["action_nvec"].astype(np.int64)
            action_space: gym.spaces.MultiDiscrete | gym.spaces.Discrete = (
                gym.spaces.Discrete(int(nvec[0]))
                if bool(data["action_discrete"])
                else gym.spaces.MultiDiscrete(nvec)
            )
            normalised = bool(data["normalised"])
            sha = str(data["model_sha256"])
            if expected_sha256 is not None and sha != expected_sha256:
                raise ValueError(
                    f"{str(path)!r} was exported from another model (sha256 {sha[:12]}..., the "
                    f"model is {expected_sha256[:12]}...); re-export it with "
                    "scripts/export_numpy_policy.py"
                )
            return cls(
                weights=weights,
                biases=biases,
                activation=str(data["activation"]),
                observation_space=obs_space,
                action_space=action_space,
                obs_mean=data["obs_mean"].astype(np.float64) if normalised else None,
                obs_var=data["obs_var"].astype(np.float64) if normalised else None,
                clip_obs=float(data["clip_obs"]),
                epsilon=float(data["epsilon"]),
                model_sha256=sha,
            )

    def save(self, path: str | Path) -> Path:
        """Write the export to ``path`` (an ``.npz`` file) and return the path."""
        path = Path(path)
        normalised = self.obs_mean is not None
        nvec = np.asarray(self._nvec, dtype=np.int64)
        arrays: dict[str, Any] = {
            "format_version": np.int64(FORMAT_VERSION),
            "n_layers": np.int64(len(self.weights)),
            "activation": np.str_(self.activation),
            "obs_low": self.observation_space.low,
            "obs_high": self.observation_space.high,
            "action_nvec": nvec,
            "action_discrete": np.bool_(isinstance(self.action_space, gym.spaces.Discrete)),
            "normalised": np.bool_(normalised),
            "obs_mean": self.obs_mean if normalised else np.zeros(0),
            "obs_var": self.obs_var if normalised else np.zeros(0),
            "clip_obs": np.float64(self.clip_obs),
            "epsilon": np.float64(self.epsilon),
            "model_sha256": np.str_(self.model_sha256),
        }
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            arrays[f"weight_{i}"] = weight
            arrays[f"bias_{i}"] = bias
        with open(path, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        return path

    def logits(self, obs: np.ndarray) -> np.ndarray:
        """Action logits of one (already normalised) observation, float32."""
        x = np.asarray(obs, dtype=np.float32).reshape(-1)
        act = ACTIVATIONS[self.activation]
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            x = weight @ x + bias
            if i < last:
                x = act(x)
        return x

    def predict(
        self,
        observation: np.ndarray,
        action_masks: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, None]:
        """The deterministic action for one observation, in SB3's ``predict`` form.

        Args:
            observation: One observation, already normalised (as SB3's ``predict`` takes it).
            action_masks: Allowed actions, concatenated over the components (``sum(nvec)``
                booleans), or ``None`` for no mask.
            deterministic: Must be true: the export keeps only the deterministic actor.

        Returns:
            ``(action, None)``: the action (an array of component indices for
            ``MultiDiscrete``, a 0-d array for ``Discrete``) and SB3's unused state.

        Raises:
            ValueError: If ``deterministic`` is false, or the mask has the wrong size or
                allows no action of some component.
        """
        if not deterministic:
            raise ValueError("a numpy policy export acts only deterministically, got False")
        logits = self.logits(observation)
        if action_masks is not None:
            mask = np.asarray(action_masks, dtype=bool).reshape(-1)
            if mask.size != logits.size:
                raise ValueError(
                    f"action_masks must have {logits.size} entries (sum of {self._nvec}), "
                    f"got {mask.size}"
                )
            logits = np.where(mask, logits, MASKED_LOGIT)
        actions = []
        start = 0
        for n in self._nvec:
            actions.append(int(np.argmax(logits[start : start + n])))
            start += n
        if isinstance(self.action_space, gym.spaces.Discrete):
            return np.array(actions[0], dtype=np.int64), None
        return np.array(actions, dtype=np.int64), None


def export_numpy_policy(model_path: str | Path, stats_path: str | Path | None = None) -> Path:
    """Export an SB3 actor-critic model's deterministic actor to ``.npz`` beside it.

    Args:
        model_path: The model ``.zip`` (MaskablePPO, PPO or A2C with an ``MlpPolicy``).
        stats_path: Its ``VecNormalize`` statistics (``.pkl``), or ``None`` when the run did
            not normalise observations.

    Returns:
        The path of the written ``.npz`` (:func:`numpy_path`).

    Raises:
        ValueError: If the model is not an MLP actor-critic policy this module can run (for
            example DQN, a CNN, or an activation not in :data:`ACTIVATIONS`).
        agents.extras.AgentsExtraMissingError: If the ``agents`` extra is not installed.
    """
    from agents.policy import INFERENCE_CUSTOM_OBJECTS, load_normalizer

    model = _load_sb3_model(Path(model_path), INFERENCE_CUSTOM_OBJECTS)
    policy = model.policy
    import torch

    if not hasattr(policy, "mlp_extractor") or not hasattr(policy, "action_net"):
        raise ValueError(
            f"{str(model_path)!r} holds a {type(policy).__name__}, not an actor-critic MLP "
            "policy; only MaskablePPO, PPO and A2C with MlpPolicy can be exported"
        )
    extractor = type(policy.pi_features_extractor).__name__
    if extractor != "FlattenExtractor":
        raise ValueError(f"only a FlattenExtractor can be exported, got {extractor}")
    if len(getattr(policy.mlp_extractor, "shared_net", ())) > 0:
        raise ValueError("policies with shared layers before the actor cannot be exported")
    weights, biases, activations = [], [], set()
    for layer in [*policy.mlp_extractor.policy_net, policy.action_net]:
        if isinstance(layer, torch.nn.Linear):
            weights.append(layer.weight.detach().cpu().numpy().astype(np.float32))
            biases.append(layer.bias.detach().cpu().numpy().astype(np.float32))
        else:
            activations.add(type(layer).__name__.lower())
    if len(activations) > 1 or not activations <= set(ACTIVATIONS):
        raise ValueError(
            f"the policy's activations {sorted(activations)} are not one of {sorted(ACTIVATIONS)}"
        )
    normalizer = load_normalizer(stats_path)
    exported = NumpyPolicy(
        weights=tuple(weights),
        biases=tuple(biases),
        activation=activations.pop() if activations else "tanh",
        observation_space=model.observation_space,
        action_space=model.action_space,
        obs_mean=None if normalizer is None else normalizer.mean,
        obs_var=None if normalizer is None else normalizer.var,
        clip_obs=10.0 if normalizer is None else normalizer.clip,
        epsilon=1e-8 if normalizer is None else normalizer.epsilon,
        model_sha256=file_sha256(model_path),
    )
    return exported.save(numpy_path(model_path))


def _load_sb3_model(model_path: Path, custom_objects: dict[str, Any]) -> Any:
    """Load the SB3 model of a run directory's ``.zip``, with the run's algorithm."""
    from agents.algorithms import get_algo
    from agents.extras import require_agents_extra
    from agents.runs import load_run_config

    require_agents_extra()
    algo = get_algo(load_run_config(model_path.parent).algo)
    return algo.load_class().load(model_path, device="cpu", custom_objects=custom_objects)
