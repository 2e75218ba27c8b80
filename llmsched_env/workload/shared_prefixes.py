"""Synthetic requests that share prompt prefixes: system prompts and multi-turn sessions.

Prefix caching pays off when prompts start alike: many requests of an application begin with the
same system prompt, and each turn of a chat resends the conversation so far (the previous turn's
prompt and answer) before the new user message (Kwon et al., vLLM, SOSP 2023; Zheng et al.,
SGLang's RadixAttention, NeurIPS 2024; the Mooncake traces, Qin et al., FAST 2025, show both
patterns in production). :class:`PrefixSharingSource` generates such requests with the share rate
as a parameter and emits the prompts' prefix block hashes, which ``ContinuousBatching-v0`` with
``kv_allocation="paged", prefix_caching=True`` uses.

Structure. Each request belongs to a session. A request starts a new session with probability
``1 / mean_turns`` (or when no session is open), otherwise it is the next turn of an open session
chosen uniformly. A new session picks one of ``n_system_prompts`` system prompts uniformly; its
first prompt is the system prompt followed by a user message. Turn ``k > 1`` of a session sends
turn ``k - 1``'s prompt, turn ``k - 1``'s output and a new user message. A session whose next
prompt would exceed ``max_prompt_tokens`` is closed and the request starts a new one.

Share rate. The *shared* tokens of a prompt are those in full blocks that an earlier prompt
started with: the system prompt's full blocks for a first turn, the previous turn's prompt's full
blocks for a later one (the previous turn's output is new to a prefix cache that keys prompts,
as this package's does). The user message is sized so that shared tokens are ``share_rate`` of the
prompt: ``user = max(1, round(shared * (1 - share_rate) / share_rate) - new)``, where ``new`` is the
previous turn's output. The measured rate over a workload (``llmsched_env.validation.
prefix_sharing``) is then close to ``share_rate``; it falls below when the first turns of the
system prompts are not yet shared or when outputs are longer than the new tokens a turn may add
(high ``share_rate`` with long outputs). Prompts grow by a factor ``1 / share_rate`` per turn,
so a low share rate makes short sessions.

Hashes. Prompt contents are token ids: each system prompt, each user message and each output get
ids of their own (a counter), so prompts share exactly the prefixes above and nothing by chance.
The hashes are those of :func:`~llmsched_env.workload.prefix_hashes.prefix_block_hashes` of these
ids, computed incrementally: a turn reuses its previous turn's chain and hashes only new blocks,
so a turn's hashes extend its previous turn's.

Determinism: ``sample`` draws, from ``rng`` and in this order, ``n`` arrival times, ``n`` output
lengths, then per request a uniform (new session or not) and an integer (which session, or which
system prompt; one more integer, the system prompt, when the chosen session is closed for length),
then the predictor's draws; the same seed gives the same workload bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from llmsched_env.workload._checks import check_float, check_int, check_rng
from llmsched_env.workload.arrivals import ArrivalProcess, PoissonArrivals
from llmsched_env.workload.lengths import LengthDistribution, LogNormal
from llmsched_env.workload.predictors import OraclePredictor, OutputLengthPredictor
from llmsched_env.workload.prefix_hashes import chain_block_hashes
from llmsched_env.workload.requests import Workload


def _extend_chain(
    chain: np.ndarray, tail: np.ndarray, block_tokens: int
) -> tuple[np.ndarray, np.ndarray]:
    """``chain`` extended over every full block of ``tail``, and what is left of ``tail``.

    ``chain`` holds the hashes of a prompt's full blocks and ``tail`` the token ids that follow
    them (the prompt's partial last block, then any new ids); the hashes are
    :func:`~llmsched_env.workload.prefix_hashes.chain_block_hashes`'.

    Returns:
        ``(chain, tail)`` of the longer prompt: the int64 hashes of its full blocks, and the ids
        after them (fewer than ``block_tokens``).
    """
    n_new = tail.shape[0] // block_tokens
    if n_new == 0:
        return chain, tail
    after = int(chain[-1]) if chain.shape[0] else None
    extended = np.concatenate([chain, chain_block_hashes(tail, block_tokens, after)])
    extended.flags.writeable = False  # a request's hashes: the workload shares it, uncopied
    return extended, tail[n_new * block_tokens :]


@dataclass
class _Session:
    """An open session: its last prompt's length, hash chain and ids after its full blocks.

    Only the ids after the last full block are kept (the next turn's hashes start there), so an
    open session holds a few bytes per block rather than its whole prompt: a sample opens about
    ``n / mean_turns`` sessions, and keeping their prompts took about 12 KB per request.
    """

    length: int
    chain: np.ndarray
    tail: np.ndarray
    output_tokens: int


@dataclass
class _Builder:
    """Builds the prompts of one sample (fresh token ids from a counter)."""

    source: PrefixSharingSource
    next_id: int = 0
    system: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)

    def fresh(self, n: int) -> np.ndarray:
        """``n`` token ids no other content has."""
        ids = np.arange(self.next_id, self.next_id + n, dtype=np.int64)
        self.next_id += n
        return ids

    def add_system_prompt(self) -> None:
        """Draw the ids of one more system prompt and hash its full blocks."""
        tokens = self.fresh(self.source.system_prompt_tokens)
        chain, tail = _extend_chain(_NO_HASHES, tokens, self.source.block_tokens)
        self.system.append((tokens, chain, tail))

    def user_tokens(self, shared: int, new: int) -> int:
        """User message length that makes ``shared`` tokens ``share_rate`` of the prompt."""
        rate = self.source.share_rate
        return max(1, round(shared * (1.0 - rate) / rate) - new)

    def first_turn(self, system: int, output_tokens: int) -> _Session:
        """A new session's first prompt: system prompt ``system`` plus a user message."""
        tokens, chain, tail = self.system[system]
        block = self.source.block_tokens
        shared = tokens.shape[0] // block * block
        user = self.fresh(self.user_tokens(shared, 0))
        chain, tail = _extend_chain(chain, np.concatenate([tail, user]), block)
        return _Session(tokens.shape[0] + user.shape[0], chain, tail, output_tokens)

    def next_turn(self, session: _Session, output_tokens: int) -> _Session | None:
        """The session's next prompt, or ``None`` if it would exceed ``max_prompt_tokens``."""
        block = self.source.block_tokens
        shared = session.length // block * block
        n_user = self.user_tokens(shared, session.output_tokens)
        length = session.length + session.output_tokens + n_user
        if length > self.source.max_prompt_tokens:
            return None
        answer = self.fresh(session.output_tokens)
        new = np.concatenate([session.tail, answer, self.fresh(n_user)])
        chain, tail = _extend_chain(session.chain, new, block)
        return _Session(length, chain, tail, output_tokens)


#: The chain of an empty prompt.
_NO_HASHES = np.zeros(0, dtype=np.int64)
_NO_HASHES.flags.writeable = False


@dataclass(frozen=True)
class PrefixSharingSource:
    """Requests from system prompts and multi-turn sessions, with prefix block hashes.

    See the module docstring for the structure, how ``share_rate`` sizes the user messages, the
    hashes, and the order of the draws.

    Attributes:
        name: Name given to the sampled workloads.
        share_rate: Target fraction of prompt tokens that are a prefix an earlier prompt had, in
            ``(0, 1)``.
        arrivals: Arrival process; its ``rate_rps`` is :attr:`natural_rate_rps`.
        output: Output-length distribution.
        n_system_prompts: Number of distinct system prompts, ``>= 1``.
        system_prompt_tokens: Length of each system prompt, ``>= 1``.
        mean_turns: Mean number of turns per session before ``max_prompt_tokens`` closes any
            (a request starts a new session with probability ``1 / mean_turns``), ``>= 1``.
            Sessions that reach ``max_prompt_tokens`` end early, so the realised mean is lower
            where prompts grow fast: 3.58 requests per session at the default 4 and 5.50 at 8
            (share rate 0.75, 4,000 requests).
        max_prompt_tokens: Longest prompt; a session that would exceed it is closed.
        block_tokens: Tokens per hashed block (16, vLLM's default KV block size).
        predictor: Output-length predictor.
        calibration_size: Number of requests in :meth:`calibration`, ``>= 1``.
        calibration_seed: Seed of the calibration generator.

    Example:
        >>> source = PrefixSharingSource(share_rate=0.8)
        >>> w = source.sample(200, np.random.default_rng(0))
        >>> len(w), w.prefix_block_tokens, len(w.prefix_block_hashes)
        (200, 16, 200)
    """

    name: str = "prefix-sharing"
    share_rate: float = 0.75
    arrivals: ArrivalProcess = PoissonArrivals(2.0)
    output: LengthDistribution = LogNormal(5.0, 0.8, max_tokens=2048)
    n_system_prompts: int = 4
    system_prompt_tokens: int = 1024
    mean_turns: float = 4.0
    max_prompt_tokens: int = 16384
    block_tokens: int = 16
    predictor: OutputLengthPredictor = OraclePredictor()
    calibration_size: int = 1024
    calibration_seed: int = 12345

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a str, got {self.name!r}")
        rate = check_float("share_rate", self.share_rate, positive=True)
        if not rate < 1.0:
            raise ValueError(
                f"share_rate must be in (0, 1) (a prompt needs at least one new token), got {rate}"
            )
        object.__setattr__(self, "share_rate", rate)
        for name, kind, protocol in (
            ("arrivals", "an arrival process with sample_times()", ArrivalProcess),
            ("output", "a length distribution with sample() and mean", LengthDistribution),
            ("predictor", "a predictor with predict()", OutputLengthPredictor),
        ):
            value = getattr(self, name)
            if not isinstance(value, protocol):
                raise TypeError(f"{name} must be {kind}, got {value!r}")
        for name in ("n_system_prompts", "system_prompt_tokens", "block_tokens"):
            object.__setattr__(self, name, check_int(name, getattr(self, name), minimum=1))
        turns = check_float("mean_turns", self.mean_turns, positive=True)
        if turns < 1.0:
            raise ValueError(f"mean_turns must be >= 1, got {turns}")
        object.__setattr__(self, "mean_turns", turns)
        shared = self.system_prompt_tokens // self.block_tokens * self.block_tokens
        user = shared * (1.0 - rate) / rate
        most = check_int("max_prompt_tokens", self.max_prompt_tokens, minimum=1)
        if not user < 2.0**53:  # a tiny rate's inf, which round() cannot take
            raise ValueError(
                f"share_rate={rate!r} is too small for max_prompt_tokens={most}: a first turn's "
                f"user message would be {user:.3g} tokens (the system prompt's {shared} shared "
                "tokens times (1 - share_rate) / share_rate)"
            )
        first = self.system_prompt_tokens + max(1, round(user))
        if most < first:
            raise ValueError(
                f"max_prompt_tokens must be >= {first}, the length of a first turn (system prompt "
                f"{self.system_prompt_tokens} tokens plus its user message at share_rate={rate}), "
                f"got {most}"
            )
        object.__setattr__(self, "max_prompt_tokens", most)
        object.__setattr__(
            self,
            "calibration_size",
            check_int("calibration_size", self.calibration_size, minimum=1),
        )
        object.__setattr__(
            self,
            "calibration_seed",
            check_int("calibration_seed", self.calibration_seed, minimum=0),
        )

    @property
    def natural_rate_rps(self) -> float:
        """The arrival process's mean rate in requests per second."""
        return float(self.arrivals.rate_rps)

    def sample(
        self,
        n_requests: int,
        rng: np.random.Generator,
        *,
        arrival_rate_rps: float | None = None,
        start: int | None = None,
    ) -> Workload:
        """Draw ``n_requests`` requests with their prefix block hashes.

        Args:
            n_requests: Number of requests, ``>= 1``.
            rng: The episode's generator.
            arrival_rate_rps: Arrival rate to use instead of :attr:`natural_rate_rps`.
            start: Must be ``None`` (a synthetic source has no fixed sequence to index).

        Returns:
            The workload, ``prefix_block_tokens = block_tokens``.

        Raises:
            ValueError: If ``start`` is given or an argument is out of range.
        """
        if start is not None:
            raise ValueError(
                f"start selects a window of a trace; synthetic source {self.name!r} has no fixed "
                f"request sequence to index, so start must be None, got {start!r}"
            )
        n = check_int("n_requests", n_requests, minimum=1)
        rng = check_rng(rng)
        rate = None
        if arrival_rate_rps is not None:
            rate = check_float("arrival_rate_rps", arrival_rate_rps, positive=True)
        arrival_s = self.arrivals.sample_times(n, rng, rate_rps=rate)
        output = self.output.sample(n, rng)
        builder = _Builder(self)
        for _ in range(self.n_system_prompts):
            builder.add_system_prompt()
        open_sessions: list[_Session] = []
        prompt = np.empty(n, dtype=np.int64)
        chains: list[np.ndarray] = []
        for i in range(n):
            starts = rng.random() < 1.0 / self.mean_turns or not open_sessions
            pick = int(rng.integers(self.n_system_prompts if starts else len(open_sessions)))
            turn = None
            if not starts:
                turn = builder.next_turn(open_sessions[pick], int(output[i]))
                if turn is not None:
                    open_sessions[pick] = turn
                else:  # too long: the session ends, this request starts a new one
                    open_sessions.pop(pick)
                    pick = int(rng.integers(self.n_system_prompts))
            if turn is None:
                turn = builder.first_turn(pick, int(output[i]))
                open_sessions.append(turn)
            prompt[i] = turn.length
            chains.append(turn.chain)
        predicted = self.predictor.predict(prompt, output, rng)
        return Workload(
            arrival_s,
            prompt,
            output,
            predicted,
            name=self.name,
            prefix_block_hashes=chains,
            prefix_block_tokens=self.block_tokens,
        )

    def calibration(self) -> Workload:
        """Return ``calibration_size`` requests drawn from ``Generator(calibration_seed)``."""
        return self.sample(self.calibration_size, np.random.default_rng(self.calibration_seed))
