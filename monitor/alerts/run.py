"""One evaluation's reads: the catalog, the bucket and the clocks, each at most once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from monitor.alerts.findings import Finding, Skip
from permafrost.catalog.store import Catalog
from permafrost.context import Context


class Run:
    """What the rules of one evaluation share: the moment, the settings, the stores."""

    def __init__(self, ctx: Context, now: datetime, watching_since: datetime) -> None:
        self.ctx, self.settings = ctx, ctx.settings
        self.now, self.watching_since = now, watching_since
        self._catalog: Catalog | None = None
        self._db_clock: datetime | None = None
        self.bucket_error: str | None = None
        self._installed: datetime | None = None

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = self.ctx.catalog()
        return self._catalog

    @property
    def db_clock(self) -> datetime:
        """`now` on the metadata server's clock: heartbeats and WAL progress are stamped with
        its now(), so their ages are measured against it (a skewed monitor clock is no alarm)."""
        if self._db_clock is None:
            self._db_clock = self.catalog.server_now() + (self.now - datetime.now(UTC))
        return self._db_clock

    @property
    def installed(self) -> datetime:
        """When the metadata store was created: the reference for "never backed up"."""
        if self._installed is None:
            self._installed = self.catalog.installed_at() or self.now
        return self._installed

    def repository_checked(self) -> None:
        """Skip the rule calling this when the bucket rule found the bucket unreachable."""
        if self.bucket_error is not None:
            raise Skip(f"the bucket is unreachable ({self.bucket_error})")

    def cached(
        self, name: str, every: timedelta, compute: Callable[[], list[Finding]]
    ) -> list[Finding]:
        """A slow check's findings, from alert_checks while younger than `every`."""
        found = self.catalog.cached_check(name)
        if found is not None and timedelta(0) <= self.now - found[0] < every:
            return [Finding.from_json(item) for item in found[1]]
        fresh = compute()
        self.catalog.cache_check(name, self.now, [finding.to_json() for finding in fresh])
        return fresh


def aware(moment: datetime) -> datetime:
    """A moment with a time zone (UTC when it had none)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
