"""Hot reload: watch the policy directory; a valid edit goes live, an invalid one is rejected.

A change is loaded and checked as a whole directory. When it changes what the classifier is built
from (categories, prompts, descriptions, required heads: the HeadSpec), the classifier is rebuilt
first through ``rebuild``, which must install the new classifier as its last step; the policies
are swapped right after it returns, with no await in between, so no post sees the new policy with
the old heads. Rule-only edits never rebuild, so the model version and the score cache stay as
they are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from watchfiles import Change, awatch

from moderator.model.base import HeadSpec
from moderator.policy.loader import PolicyError, load_policy_set
from moderator.policy.store import PolicyStore

log = logging.getLogger(__name__)

Rebuild = Callable[[HeadSpec], Awaitable[None]]


@dataclass(frozen=True)
class ReloadResult:
    """What one reload attempt did."""

    applied: bool
    error: str | None = None
    diff: str = ""
    rebuilt: bool = False


def _policy_file(change: Change, path: str) -> bool:
    return path.endswith((".yaml", ".yml"))


class PolicyReloader:
    """Reloads a PolicyStore from its directory, on demand or whenever a file changes."""

    def __init__(self, store: PolicyStore, directory: Path, rebuild: Rebuild | None = None,
                 debounce_ms: int = 200) -> None:
        self.store = store
        self.directory = directory
        self.rebuild = rebuild
        self.debounce_ms = debounce_ms
        self.applied = 0
        self.rejected = 0
        self.last_error: str | None = None

    def _reject(self, error: str) -> ReloadResult:
        self.rejected += 1
        self.last_error = error
        log.error("policy change rejected, still serving %s:\n%s", self._serving(), error)
        return ReloadResult(applied=False, error=error)

    def _serving(self) -> str:
        return ", ".join(f"{p.name} v{p.version}" for p in self.store.current.policies.values())

    async def reload(self) -> ReloadResult:
        """Load the directory; serve it when valid and different, else keep the last good set."""
        try:
            newer = await asyncio.to_thread(load_policy_set, self.directory)
        except PolicyError as exc:
            return self._reject(str(exc))
        current = self.store.current
        if newer.texts == current.texts and newer.sources == current.sources:
            return ReloadResult(applied=False)
        diff = current.diff(newer)
        heads = newer.head_spec()
        rebuilt = heads != current.head_spec()
        if rebuilt:
            if self.rebuild is None:
                return self._reject("categories, prompts or heads changed, but this process cannot rebuild its "
                                    "classifier; restart the service to apply this change")
            try:
                await self.rebuild(heads)
            except Exception as exc:  # noqa: BLE001 - a model that fails to build must not take the service down
                return self._reject(f"rebuilding the classifier for the new categories failed: {exc!r}")
        self.store.swap(newer)
        self.applied += 1
        self.last_error = None
        log.info("policies reloaded, now serving %s%s:\n%s", self._serving(),
                 " (classifier rebuilt for new categories/prompts)" if rebuilt else "", diff)
        return ReloadResult(applied=True, diff=diff, rebuilt=rebuilt)

    async def watch(self, stop: asyncio.Event) -> None:
        """Reload after every change to a policy file until ``stop`` is set."""
        while not stop.is_set():
            try:
                async for _ in awatch(self.directory, watch_filter=_policy_file, debounce=self.debounce_ms,
                                      step=50, stop_event=stop, recursive=False):
                    await self.reload()
            except (OSError, RuntimeError) as exc:  # directory gone or watcher failure: keep serving, retry
                log.warning("watching %s failed (%s); retrying", self.directory, exc)
                await asyncio.sleep(1.0)
