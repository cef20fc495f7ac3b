"""Which monitor instance polls which (target, region) pair.

Rendezvous hashing: every pair scores each shard with a stable hash and goes
to the highest score. Every pair has exactly one owner, any instance can
work the assignment out alone, and going from N to N+1 shards moves only the
pairs the new shard wins, about 1/(N+1) of them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_SPEC = re.compile(r"(\d+)/(\d+)")


@dataclass(frozen=True, slots=True)
class Shard:
    """This instance's shard: ``index`` of ``count``, counted from 1."""

    index: int = 1
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        match = _SPEC.fullmatch(text.strip())
        if match is None:
            raise ValueError(f'"{text}" is not a shard (use e.g. "2/4")')
        index, count = int(match[1]), int(match[2])
        if not 1 <= index <= count:
            raise ValueError(
                f'"{text}": the shard must be between 1/{count} and {count}/{count}'
            )
        return cls(index, count)

    def owns(self, account: str, region: str) -> bool:
        return owner(account, region, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def owner(account: str, region: str, count: int) -> int:
    """The shard (1..count) that polls ``region`` of the target ``account``."""
    return max(range(1, count + 1), key=lambda shard: _score(account, region, shard))


def _score(account: str, region: str, shard: int) -> int:
    # A cryptographic hash for its spread, not its secrecy; Python's hash()
    # differs between processes, which would split the cluster's view.
    digest = hashlib.blake2b(
        f"{account}\0{region}\0{shard}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big")
