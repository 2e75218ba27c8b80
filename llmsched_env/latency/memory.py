"""KV-cache memory: how many tokens of key/value cache a GPU holds.

Memory sizes are in decimal gigabytes (1 GB = 1e9 bytes), as in the request-level reference
simulator, whose constants (12 GB GPU, 4 GB model, 1.875e-4 GB of KV per token, 1 GB margin) give
its 37,333-token capacity. Per-token KV sizes are in bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmsched_env import arguments
from llmsched_env.latency import _checks

BYTES_PER_GB = 1e9
"""Bytes in one (decimal) gigabyte."""


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int, dtype_bytes: int) -> int:
    """Bytes of KV cache one token occupies: ``2 * layers * kv_heads * head_dim * dtype_bytes``.

    The factor 2 counts the key and the value. Models with grouped-query attention store only their
    ``kv_heads`` key/value heads, not all attention heads (Ainslie et al., GQA, EMNLP 2023).

    Args:
        layers: Transformer layers.
        kv_heads: Key/value heads per layer.
        head_dim: Dimension of each head.
        dtype_bytes: Bytes per stored number (2 for fp16/bf16, 1 for fp8).

    Returns:
        Bytes per token.

    Example:
        >>> kv_bytes_per_token(layers=32, kv_heads=32, head_dim=128, dtype_bytes=2)  # Llama-2-7B
        524288
        >>> kv_bytes_per_token(layers=32, kv_heads=8, head_dim=128, dtype_bytes=2)  # Llama-3-8B
        131072
    """
    owner = "kv_bytes_per_token"
    return (
        2
        * _checks.integer(owner, "layers", layers, minimum=1)
        * _checks.integer(owner, "kv_heads", kv_heads, minimum=1)
        * _checks.integer(owner, "head_dim", head_dim, minimum=1)
        * _checks.integer(owner, "dtype_bytes", dtype_bytes, minimum=1)
    )


#: The largest KV capacity: ``2**53``, the largest integer a float64 holds exactly (the KV
#: counters are divided and compared as floats).
MAX_CAPACITY_TOKENS = 2**53


@dataclass(frozen=True)
class KVMemory:
    """The KV-cache capacity of one GPU, in tokens.

    Attributes:
        capacity_tokens: Tokens of KV cache (prompt plus generated tokens of all resident
            sequences) that fit at once; from 1 to :data:`MAX_CAPACITY_TOKENS` (``2**53``).

    Example:
        >>> KVMemory.from_gpu(12.0, 4.0, kv_bytes_per_token=187_500, margin_gb=1.0).capacity_tokens
        37333
    """

    capacity_tokens: int

    def __post_init__(self) -> None:
        value = arguments.integer(
            type(self).__name__,
            "capacity_tokens",
            self.capacity_tokens,
            minimum=1,
            maximum=MAX_CAPACITY_TOKENS,
            reason="the largest integer a float64 holds exactly: the 'unlimited' preset",
        )
        object.__setattr__(self, "capacity_tokens", value)

    @classmethod
    def from_gpu(
        cls,
        gpu_memory_gb: float,
        model_memory_gb: float,
        kv_bytes_per_token: float,
        margin_gb: float = 0.0,
    ) -> KVMemory:
        """Capacity of the memory left after the weights and a safety margin.

        ``capacity_tokens = floor((gpu_memory_gb - model_memory_gb - margin_gb) * 1e9 /
        kv_bytes_per_token)``.

        Args:
            gpu_memory_gb: GPU memory, in GB (1e9 bytes).
            model_memory_gb: Memory taken by the model weights, in GB.
            kv_bytes_per_token: Bytes of KV cache per token (see :func:`kv_bytes_per_token`).
            margin_gb: Memory held back for activations and the runtime, in GB.

        Returns:
            The GPU's KV memory.

        Raises:
            ValueError: If a size is negative or not finite, or no memory is left for one token.
        """
        owner = f"{cls.__name__}.from_gpu"
        gpu = _checks.real(owner, "gpu_memory_gb", gpu_memory_gb, positive=True)
        model = _checks.real(owner, "model_memory_gb", model_memory_gb)
        margin = _checks.real(owner, "margin_gb", margin_gb)
        per_token = _checks.real(owner, "kv_bytes_per_token", kv_bytes_per_token, positive=True)
        free_bytes = round((gpu - model - margin) * BYTES_PER_GB)
        capacity = math.floor(free_bytes / per_token) if free_bytes > 0 else 0
        if capacity < 1:
            raise ValueError(
                f"{owner}: no room for KV cache: gpu_memory_gb={gpu_memory_gb!r} minus "
                f"model_memory_gb={model_memory_gb!r} minus margin_gb={margin_gb!r} leaves "
                f"{free_bytes} bytes, less than one token of {kv_bytes_per_token!r} bytes"
            )
        return cls(capacity)
