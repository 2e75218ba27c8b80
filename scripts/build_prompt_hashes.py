"""Rebuild the shipped prefix block hashes of a workload file with token ids.

Usage::

    python scripts/build_prompt_hashes.py WORKLOAD.jsonl [OUT_DIR] [--block-tokens 16]

Writes ``OUT_DIR/<workload>.prefix-hashes.npz`` (default ``OUT_DIR``: the package's
``data/vllm_bench/workloads``) and prints its size and the prompts' block counts. The workload
files are LLMServingSim 2.0's ShareGPT workloads (casys-kaist/LLMServingSim, MIT).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from llmsched_env.cli_args import positive_int
from llmsched_env.validation.prompt_hashes import (
    load_prompt_hashes,
    prompt_hashes_from_jsonl,
    save_prompt_hashes,
)

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "data" / "vllm_bench" / "workloads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", type=Path, help="a JSON-lines workload with token ids")
    parser.add_argument(
        "out_dir",
        type=Path,
        nargs="?",
        default=DEFAULT_OUT,
        help="where to write WORKLOAD.prefix-hashes.npz, replacing it (default: the package's "
        "data/vllm_bench/workloads, the shipped files)",
    )
    parser.add_argument("--block-tokens", type=positive_int, default=16)
    args = parser.parse_args()
    if not args.workload.is_file():
        parser.error(f"workload {str(args.workload)!r} is not a file")
    if args.out_dir.exists() and not args.out_dir.is_dir():
        parser.error(f"out_dir {str(args.out_dir)!r} is a file; expected a directory")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    hashes = prompt_hashes_from_jsonl(args.workload, args.block_tokens)
    out = args.out_dir / f"{args.workload.stem}.prefix-hashes.npz"
    save_prompt_hashes(hashes, out)
    again = load_prompt_hashes(out)
    assert all((a == b).all() for a, b in zip(again.hashes, hashes.hashes))
    blocks = sum(len(chain) for chain in hashes.hashes)
    print(f"{out}: {len(hashes)} prompts, {blocks} blocks, {out.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
