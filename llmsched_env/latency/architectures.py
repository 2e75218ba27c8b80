"""Architecture facts of the profiled models: layers, ops, KV size, weights, experts.

The numbers come from the models' Hugging Face configurations (``config.json`` of
meta-llama/Llama-3.1-8B, Qwen/Qwen3-32B and Qwen/Qwen3-30B-A3B-Instruct-2507); parameter counts are
recomputed from those dimensions (untied input and output embeddings, bf16 weights). The op lists
follow the layer sequence that LLMServingSim 2.0 (casys-kaist/LLMServingSim) walks for the llama,
qwen3 and qwen3_moe architectures: every decoder layer runs its ops once, except the RMSNorm
``layernorm``, which runs twice (before attention and before the MLP).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmsched_env.latency.memory import kv_bytes_per_token


@dataclass(frozen=True)
class ModelArchitecture:
    """What the profiled iteration model needs to know about a model.

    Attributes:
        name: Hugging Face model id.
        layers: Decoder layers.
        hidden_size: Width of the residual stream (sizes the tensor-parallel all-reduces).
        kv_heads: Key/value heads per layer.
        head_dim: Dimension of each head.
        parameters: All parameters.
        layer_ops: The ``dense.csv`` ops of one decoder layer, an op listed once per call.
        tp_stable_ops: Ops whose cost does not shrink with tensor parallelism (norms, sampler);
            LLMServingSim profiles them once, at TP 1.
        experts: Routed experts per MoE layer (0 for a dense model).
        active_experts: Experts each token is routed to (top-k).
        expert_parameters: Parameters of all routed experts (the part expert parallelism shards).
        dtype_bytes: Bytes per weight and per KV element (2 for bf16).
    """

    name: str
    layers: int
    hidden_size: int
    kv_heads: int
    head_dim: int
    parameters: int
    layer_ops: tuple[str, ...]
    tp_stable_ops: tuple[str, ...] = ("final_layernorm", "layernorm", "qk_norm", "sampler")
    experts: int = 0
    active_experts: int = 0
    expert_parameters: int = 0
    dtype_bytes: int = 2

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes of one token over all layers (before any tensor-parallel split)."""
        return kv_bytes_per_token(self.layers, self.kv_heads, self.head_dim, self.dtype_bytes)

    def weight_bytes_per_gpu(self, tp_degree: int = 1, ep_degree: int = 1) -> float:
        """Weight bytes on one GPU: all weights split by TP; with EP, experts split by EP instead.

        Args:
            tp_degree: Tensor-parallel degree (every weight is split ``tp_degree`` ways; the
                replicated norms are negligible).
            ep_degree: Expert-parallel degree (each GPU holds ``1 / ep_degree`` of the experts and
                a full copy of everything else).

        Returns:
            Bytes.
        """
        dense = self.parameters - self.expert_parameters
        params = dense / tp_degree + self.expert_parameters / (tp_degree * ep_degree)
        return params * self.dtype_bytes


PROLOGUE_OPS = ("embedding", "final_layernorm")
"""``dense.csv`` ops that run once per iteration, by token count (not once per layer)."""

SEQUENCE_OPS = ("lm_head", "sampler")
"""``per_sequence.csv`` ops that run once per iteration, by sequence count."""

_LLAMA_OPS = (
    "layernorm",
    "qkv_proj",
    "rotary_emb",
    "o_proj",
    "layernorm",
    "gate_up_proj",
    "act_fn",
    "down_proj",
)
_QWEN3_OPS = (
    "layernorm",
    "qkv_proj",
    "qk_norm",
    "rotary_emb",
    "o_proj",
    "layernorm",
    "gate_up_proj",
    "act_fn",
    "down_proj",
)
_QWEN3_MOE_OPS = ("layernorm", "qkv_proj", "qk_norm", "rotary_emb", "o_proj", "layernorm")

ARCHITECTURES: dict[str, ModelArchitecture] = {
    # hidden 4096, 32 heads, intermediate 14336, vocab 128256.
    "llama3.1-8b": ModelArchitecture(
        name="meta-llama/Llama-3.1-8B",
        layers=32,
        hidden_size=4096,
        kv_heads=8,
        head_dim=128,
        parameters=8_030_261_248,
        layer_ops=_LLAMA_OPS,
    ),
    # hidden 5120, 64 heads, intermediate 25600, vocab 151936.
    "qwen3-32b": ModelArchitecture(
        name="Qwen/Qwen3-32B",
        layers=64,
        hidden_size=5120,
        kv_heads=8,
        head_dim=128,
        parameters=32_762_123_264,
        layer_ops=_QWEN3_OPS,
    ),
    # hidden 2048, 32 heads, 128 experts of intermediate 768 (8 per token), vocab 151936.
    "qwen3-30b-a3b": ModelArchitecture(
        name="Qwen/Qwen3-30B-A3B-Instruct-2507",
        layers=48,
        hidden_size=2048,
        kv_heads=4,
        head_dim=128,
        parameters=30_532_122_624,
        layer_ops=_QWEN3_MOE_OPS,
        experts=128,
        active_experts=8,
        expert_parameters=28_991_029_248,
    ),
}
"""The profiled models, by short name."""
