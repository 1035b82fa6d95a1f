"""Bank check: a post's image against the hash banks its policy uses, before any score is computed."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from moderator.banks.hashing import sha256_hex
from moderator.banks.matcher import BankMatcher
from moderator.banks.schema import BankMatch
from moderator.banks.store import BankStore
from moderator.ingest.images import decode_image
from moderator.ingest.validate import IngestLimits, ValidPost
from moderator.policy.engine import PolicyVerdict, bank_verdict
from moderator.policy.schema import Policy
from moderator.telemetry.instrument import Telemetry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BankResult:
    """The post's bank matches, and the verdict when a bank rule already decides it (the model is skipped)."""

    matches: Sequence[BankMatch] = ()
    verdict: PolicyVerdict | None = None


class BankCheck:
    """Match against sha256 / PDQ banks in Redis; when Redis fails, the post is decided without banks."""

    def __init__(self, banks: BankMatcher | None, limits: IngestLimits, telemetry: Telemetry) -> None:
        self.banks = banks
        self.limits = limits
        self.telemetry = telemetry
        self.errors = 0

    @classmethod
    def from_redis(cls, redis: Redis | None, refresh_s: float, limits: IngestLimits,
                   telemetry: Telemetry) -> BankCheck:
        """The stage over the banks in ``redis`` (none without Redis)."""
        banks = BankMatcher(BankStore(redis), refresh_s) if redis is not None else None
        return cls(banks, limits, telemetry)

    async def load(self, policies: Iterable[Policy]) -> None:
        """Load the banks ``policies`` use now, so the first posts do not wait for them (a Redis
        failure is logged and the banks load on first use)."""
        names = {name for policy in policies for name in policy.bank_limits}
        declared = frozenset(name for policy in policies for name in policy.declared_banks)
        if self.banks is not None and names:
            await self.banks.refresh(names, declared=declared)

    async def __call__(self, post: ValidPost, policy: Policy) -> BankResult:
        """Matches of the post's image in the banks ``policy`` names (perceptual banks decode the image)."""
        bank_limits = policy.bank_limits
        if self.banks is None or post.image_bytes is None or not bank_limits:
            return BankResult()
        with self.telemetry.stage("bank_check"):
            try:
                matches = await self.banks.match(post.image_bytes, sha256_hex(post.image_bytes), bank_limits,
                                                 lambda data: decode_image(data, self.limits.image),
                                                 policy.declared_banks)
            except RedisError as exc:
                self.errors += 1
                log.warning("hash bank lookup failed, deciding without banks: %s", exc)
                return BankResult()
        return BankResult(matches, bank_verdict(policy, post.metadata, matches))
