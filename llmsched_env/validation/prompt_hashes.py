"""Prefix block hashes of a recorded run's prompts, for replaying it with prefix caching.

The RTX 4090 run of LLMServingSim 2.0 (casys-kaist/LLMServingSim, MIT) served a ShareGPT
workload whose file holds every prompt's token ids, with vLLM's automatic prefix caching on.
Replaying it with ``prefix_caching=True`` needs to know which prompts share block-aligned
prefixes; the block hash chains (:func:`~llmsched_env.workload.prefix_block_hashes_from_token_ids`,
16-token blocks as in that run) say exactly that, so the package ships them, with each prompt's
and output's length for matching, as a compressed ``.npz`` in ``data/vllm_bench/workloads``
(about 130 kB instead of the 2.5 MB workload file). ``scripts/build_prompt_hashes.py`` rebuilds
it from the workload file.

File format (``numpy.savez_compressed``): ``hashes`` (int64, every prompt's chain one after the
other), ``offsets`` (int64, ``n + 1``: prompt ``i``'s chain is ``hashes[offsets[i]:offsets[i +
1]]``), ``input_toks`` and ``output_toks`` (int64, ``n``) and ``block_tokens`` (a scalar), in the
workload file's order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np

from llmsched_env.validation.runs import VllmRun
from llmsched_env.workload import Workload, prefix_block_hashes

#: Where the shipped hash files live inside the package ``llmsched_env.data``.
_SHIPPED_HASHES = ("vllm_bench", "workloads")
_SUFFIX = ".prefix-hashes.npz"
_KEYS = ("hashes", "offsets", "input_toks", "output_toks", "block_tokens")


@dataclass(frozen=True, eq=False)
class PromptHashes:
    """The prefix block hash chains of a workload file's prompts, in file order.

    Attributes:
        name: The workload's name (its file name without suffix).
        block_tokens: Tokens per hashed block.
        input_toks: Prompt tokens per request.
        output_toks: Output tokens per request.
        hashes: One read-only int64 chain per request, ``input_toks // block_tokens`` long.
    """

    name: str
    block_tokens: int
    input_toks: np.ndarray
    output_toks: np.ndarray
    hashes: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return len(self.hashes)


def prompt_hashes_from_jsonl(path: str | Path, block_tokens: int = 16) -> PromptHashes:
    """Hash the prompts of a workload file (one JSON object a line).

    Each line needs ``input_toks``, ``output_toks`` and ``input_tok_ids`` (a list of
    ``input_toks`` integers), as in LLMServingSim 2.0's ShareGPT workloads.

    Raises:
        ValueError: If a line is not JSON, misses a key, or its ids do not number
            ``input_toks`` (names the file and line).
    """
    path = Path(path)
    inputs, outputs, chains = [], [], []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: not JSON ({error.msg})") from None
            ids = record.get("input_tok_ids") if isinstance(record, dict) else None
            if not isinstance(ids, list):
                raise ValueError(f"{path}, line {number}: expected a list `input_tok_ids`")
            n_in, n_out = record.get("input_toks"), record.get("output_toks")
            if not isinstance(n_in, int) or not isinstance(n_out, int) or n_out < 1:
                raise ValueError(
                    f"{path}, line {number}: expected integers `input_toks` and `output_toks` "
                    f">= 1, got {n_in!r} and {n_out!r}"
                )
            if len(ids) != n_in:
                raise ValueError(
                    f"{path}, line {number}: `input_tok_ids` has {len(ids)} ids, but "
                    f"`input_toks` = {n_in}"
                )
            inputs.append(n_in)
            outputs.append(n_out)
            chains.append(prefix_block_hashes(ids, block_tokens))
    if not chains:
        raise ValueError(f"{path}: holds no request")
    return _prompt_hashes(path.stem, block_tokens, inputs, outputs, chains)


def save_prompt_hashes(prompt_hashes: PromptHashes, path: str | Path) -> None:
    """Write ``prompt_hashes`` as a compressed ``.npz`` (see the module docstring)."""
    lengths = [len(chain) for chain in prompt_hashes.hashes]
    np.savez_compressed(
        Path(path),
        hashes=np.concatenate([np.zeros(0, np.int64), *prompt_hashes.hashes]),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        input_toks=np.asarray(prompt_hashes.input_toks, dtype=np.int64),
        output_toks=np.asarray(prompt_hashes.output_toks, dtype=np.int64),
        block_tokens=np.int64(prompt_hashes.block_tokens),
    )


def load_prompt_hashes(path: str | Path) -> PromptHashes:
    """Read a hash file written by :func:`save_prompt_hashes`, checked.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If an array is missing or the arrays do not fit together (names the file).
    """
    path = Path(path)
    with np.load(path) as data:
        missing = [key for key in _KEYS if key not in data.files]
        if missing:
            raise ValueError(f"{path}: missing arrays {missing}; expected {list(_KEYS)}")
        hashes, offsets = data["hashes"], data["offsets"]
        inputs, outputs = data["input_toks"], data["output_toks"]
        block_tokens = int(data["block_tokens"])
    n = inputs.shape[0]
    if (
        offsets.shape != (n + 1,)
        or outputs.shape != (n,)
        or offsets[0] != 0
        or offsets[-1] != hashes.shape[0]
        or (np.diff(offsets) < 0).any()
    ):
        raise ValueError(
            f"{path}: offsets must rise from 0 to len(hashes) = {hashes.shape[0]} with one "
            f"entry per request plus one ({n + 1}), and output_toks must have {n} entries"
        )
    chains = [hashes[offsets[i] : offsets[i + 1]] for i in range(n)]
    name = path.name[: -len(_SUFFIX)] if path.name.endswith(_SUFFIX) else path.stem
    return _prompt_hashes(name, block_tokens, inputs.tolist(), outputs.tolist(), chains)


def shipped_prompt_hashes(name: str) -> PromptHashes:
    """The shipped prompt hashes of workload ``name``.

    The file is ``data/vllm_bench/workloads/<name>.prefix-hashes.npz``.

    Raises:
        FileNotFoundError: If no such file is shipped (the message lists the shipped ones).
    """
    folder = Path(str(files("llmsched_env.data").joinpath(*_SHIPPED_HASHES)))
    path = folder / f"{name}{_SUFFIX}"
    if not path.is_file():
        shipped = sorted(p.name[: -len(_SUFFIX)] for p in folder.glob(f"*{_SUFFIX}"))
        raise FileNotFoundError(f"no shipped prompt hashes named {name!r}; shipped: {shipped}")
    return load_prompt_hashes(path)


def attach_prompt_hashes(
    workload: Workload, order: np.ndarray, run: VllmRun, prompt_hashes: PromptHashes
) -> Workload:
    """Give a run's workload the hash chains of its prompts.

    The run's requests (``run.requests``, file order) are the workload file's requests in the
    same order (for a subset from ``run.head``, those at its ``file_rows``): this is checked on
    every request's prompt and output lengths.

    Args:
        workload: The run's workload, from ``run_workload(run)``.
        order: Its order: workload request ``i`` is ``run.requests`` row ``order[i]``.
        run: The run.
        prompt_hashes: The hash chains of the run's workload file.

    Returns:
        The workload with ``prefix_block_hashes`` (and ``prefix_block_tokens``) set.

    Raises:
        ValueError: If the numbers of requests differ, or a request's lengths differ (names
            the first such request).
    """
    requests = run.requests
    rows = np.arange(len(requests)) if run.file_rows is None else np.asarray(run.file_rows)
    if run.file_rows is None and len(requests) != len(prompt_hashes):
        raise ValueError(
            f"run {run.name!r} has {len(requests)} requests, but the prompt hashes of "
            f"{prompt_hashes.name!r} cover {len(prompt_hashes)}"
        )
    if rows.size and rows.max() >= len(prompt_hashes):
        raise ValueError(
            f"run {run.name!r} holds request line {int(rows.max())}, but the prompt hashes of "
            f"{prompt_hashes.name!r} cover only {len(prompt_hashes)} requests"
        )
    for column, expected in (
        ("input_toks", prompt_hashes.input_toks[rows]),
        ("output_toks", prompt_hashes.output_toks[rows]),
    ):
        mismatch = np.flatnonzero(requests[column].to_numpy() != expected)
        if mismatch.size:
            row = int(mismatch[0])
            raise ValueError(
                f"run {run.name!r} does not match the workload {prompt_hashes.name!r}: request "
                f"row {row} ({requests['request_id'].iloc[row]}) has {column} = "
                f"{int(requests[column].iloc[row])}, the workload has {int(expected[row])} "
                f"({mismatch.size} rows differ)"
            )
    chains = [prompt_hashes.hashes[i] for i in rows[np.asarray(order)].tolist()]
    return workload.with_prefix_hashes(chains, prompt_hashes.block_tokens)


def _prompt_hashes(name, block_tokens, inputs, outputs, chains) -> PromptHashes:
    inputs = np.asarray(inputs, dtype=np.int64)
    outputs = np.asarray(outputs, dtype=np.int64)
    frozen = []
    for i, chain in enumerate(chains):
        chain = np.array(chain, dtype=np.int64)
        if chain.shape[0] != inputs[i] // block_tokens:
            raise ValueError(
                f"{name}: request {i} has {chain.shape[0]} block hashes, expected "
                f"input_toks // block_tokens = {inputs[i] // block_tokens}"
            )
        chain.flags.writeable = False
        frozen.append(chain)
    for array in (inputs, outputs):
        array.flags.writeable = False
    return PromptHashes(name, int(block_tokens), inputs, outputs, tuple(frozen))
