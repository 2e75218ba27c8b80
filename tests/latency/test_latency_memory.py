"""Tests of llmsched_env/latency/memory.py: KV-cache capacity."""

from __future__ import annotations

import math

import pytest

from llmsched_env.latency import KVMemory, kv_bytes_per_token


def test_kv_bytes_per_token_known_models():
    assert kv_bytes_per_token(32, 32, 128, 2) == 512 * 1024  # Llama-2-7B, fp16: 512 KiB
    assert kv_bytes_per_token(32, 8, 128, 2) == 128 * 1024  # Llama-3-8B, GQA: 128 KiB


def test_from_gpu_reproduces_the_reference_simulator():
    # M_MAX = 12 GB, M_MODEL = 4 GB, 1.875e-4 GB of KV per token, 1 GB margin.
    memory = KVMemory.from_gpu(12.0, 4.0, kv_bytes_per_token=1.875e-4 * 1e9, margin_gb=1.0)
    assert memory.capacity_tokens == math.floor((12 - 4 - 1) / 1.875e-4) == 37_333


def test_from_gpu_llama3_8b_on_80gb():
    memory = KVMemory.from_gpu(80.0, 16.0, kv_bytes_per_token(32, 8, 128, 2), margin_gb=8.0)
    assert memory.capacity_tokens == (80 - 16 - 8) * 10**9 // 131_072 == 427_246


def test_kv_memory_rejects_bad_values():
    in_range = r"capacity_tokens must be an integer in \[1, 9007199254740992\]"
    with pytest.raises(ValueError, match=in_range + r".*, got 0"):
        KVMemory(0)
    with pytest.raises(TypeError, match=in_range + r".*, got 1\.5"):
        KVMemory(1.5)
    # 2**63 overflowed the server's int64 counters at reset: refused at construction.
    with pytest.raises(ValueError, match=in_range + r".*, got 9223372036854775808"):
        KVMemory(2**63)
    with pytest.raises(ValueError, match="no room for KV cache: gpu_memory_gb=8.0 minus"):
        KVMemory.from_gpu(8.0, 7.0, 1e6, margin_gb=1.0)
    with pytest.raises(ValueError, match=r"margin_gb must be a finite number >= 0, got -1\.0"):
        KVMemory.from_gpu(80.0, 16.0, 131_072, margin_gb=-1.0)
    with pytest.raises(ValueError, match=r"kv_bytes_per_token must be a finite number > 0"):
        KVMemory.from_gpu(80.0, 16.0, 0)
    with pytest.raises(ValueError, match=r"kv_heads must be an integer >= 1, got 0"):
        kv_bytes_per_token(32, 0, 128, 2)


def test_kv_memory_is_frozen():
    memory = KVMemory(100)
    with pytest.raises(AttributeError):
        memory.capacity_tokens = 5  # type: ignore[misc]
