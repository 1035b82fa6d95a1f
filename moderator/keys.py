"""Redis key names, built one way: ``moderator:<space>:<part>:...``.

Every Redis user (score cache, hash banks, review queue, recorded decisions, escalation verdicts, API keys)
takes its namespace from here, so a deployment's keys are listed and scanned in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

ROOT = "moderator"


@dataclass(frozen=True)
class Keyspace:
    """One namespace of keys; tests may isolate themselves with a prefix of their own."""

    prefix: str

    def key(self, *parts: str) -> str:
        """The key ``<prefix>:<part>:<part>...``."""
        return ":".join((self.prefix, *parts))

    def __str__(self) -> str:
        return self.prefix


def keyspace(name: str) -> Keyspace:
    """The service's namespace ``moderator:<name>``."""
    return Keyspace(f"{ROOT}:{name}")


SCORES = keyspace("scores")
BANKS = keyspace("banks")
REVIEW = keyspace("review")
SCORE_LOG = keyspace("score-log")
ESCALATION = keyspace("escalation")
API = keyspace("api")
