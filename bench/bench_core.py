"""In-process costs of the building blocks every request pays: the audit event hash and (for
sign-in) one Argon2id verification at the default parameters. The policy decision has its own
benchmark (bench_policy.py)."""

from __future__ import annotations

import statistics
import time

from argon2 import PasswordHasher

from userorg.audit.chain import GENESIS_HASH, event_hash


def _percentiles(samples: list[float]) -> tuple[float, float]:
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)]


def _time_each(func, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(n):
        start = time.perf_counter_ns()
        func()
        out.append((time.perf_counter_ns() - start) / 1000)
    return out


def main() -> None:
    document = {
        "eventId": "01a21296-3a40-7283-9bd5-2e1f7e31a4d9",
        "chainId": "org",
        "seq": 1,
        "action": "api:organization:update",
        "outcome": "success",
        "actor": {"type": "user", "id": "u"},
        "target": {"type": "organization", "id": "o"},
        "metadata": {"changes": {"name": "x"}},
        "prevHash": GENESIS_HASH,
    }
    p50, p99 = _percentiles(_time_each(lambda: event_hash(document), 100_000))
    print(f"| audit event hash (canonical JSON + SHA-256) | p50 {p50:.2f} µs | p99 {p99:.2f} µs |")

    hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
    hashed = hasher.hash("Correct-Horse-Battery-Staple-42")
    samples = _time_each(lambda: hasher.verify(hashed, "Correct-Horse-Battery-Staple-42"), 30)
    mean_ms = statistics.mean(samples) / 1000
    print(
        f"| Argon2id verify (default: t=2, m=19 MiB, p=1) | mean {mean_ms:.1f} ms | ≈ {1000 / mean_ms:.0f} verifications/s per core |"
    )


if __name__ == "__main__":
    main()
