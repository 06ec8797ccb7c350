"""Retention of base-backup chains: a full and its incrementals are kept whole, broken ones left.

Synthesized records, time moving day by day: a weekly full on Sunday at 00:00 and an
incremental every 6 hours after it, each depending on the one before.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from permafrost.config.settings import RetentionSettings
from permafrost.retention.plan import Action, Decision, Item, Pin, plan

START = datetime(2026, 10, 4, tzinfo=UTC)  # a Sunday: the first full
POLICY = RetentionSettings()  # PITR_WINDOW_DAYS=14, RETENTION_MIN_KEEP=3


def bid(moment: datetime) -> str:
    return f"{moment:%Y%m%dT%H%M%SZ}-c0ffee"


def backups_until(end: datetime) -> list[Item]:
    """Every base backup taken from START until `end`: fulls weekly, incrementals every 6 h."""
    out: list[Item] = []
    moment = START
    while moment <= end:
        full = moment.weekday() == 6 and moment.hour == 0
        parent = None if full else out[-1].id
        out.append(Item(bid(moment), "main", "base", "base", moment, moment, parent_id=parent))
        moment += timedelta(hours=6)
    return out


def chains_of(items: list[Item]) -> dict[str, set[str]]:
    """Each full's id and the ids of its chain (the full and its incrementals)."""
    by_id = {i.id: i for i in items}
    out: dict[str, set[str]] = {}
    for i in items:
        top = i
        while top.parent_id is not None:
            top = by_id[top.parent_id]
        out.setdefault(top.id, set()).add(i.id)
    return out


def kept_ids(decisions: list[Decision]) -> set[str]:
    return {d.item.id for d in decisions if d.keep}


def test_a_week_of_chains_at_a_time_is_kept_whole_and_goes_whole() -> None:
    everything = backups_until(START + timedelta(days=42))
    chains = chains_of(everything)
    bucket: dict[str, Item] = {}
    deleted_on: dict[str, datetime] = {}
    for day in range(43):
        now = START + timedelta(days=day, hours=23, minutes=59)
        for i in everything:
            if i.started_at <= now and i.id not in bucket and i.id not in deleted_on:
                bucket[i.id] = i
        decisions = plan(list(bucket.values()), POLICY, now)
        kept = kept_ids(decisions)
        for d in decisions:
            if d.item.parent_id is not None and d.keep:
                assert d.item.parent_id in kept, f"day {day}: {d.item.id} kept, its parent not"
            if d.action is Action.DELETE:
                deleted_on[d.item.id] = now
                del bucket[d.item.id]
        for full, members in chains.items():
            gone = members & set(deleted_on)
            assert not gone or gone == members, f"day {day}: chain {full} cut"
            assert gone or all(m in bucket for m in members if m <= bid(now))
    # On the last day (a Sunday) the window (14 days) reaches back into the chain begun two
    # weeks before: that chain and the two after it are kept whole (so are the newest three
    # chains, by min-keep); the four older ones went whole.
    fulls = sorted(chains)
    assert len(fulls) == 7
    assert set(deleted_on) == set().union(*(chains[f] for f in fulls[:4]))
    assert all(m in bucket for f in fulls[4:] for m in chains[f])
    # The first chain went on the day its successor's first member fell out of the window (and
    # three newer chains had begun): not before, while its newest member was the window's start.
    assert {d.date() for f in fulls[:1] for d in (deleted_on[m] for m in chains[f])} == {
        (START + timedelta(days=21)).date()
    }


def test_an_ancestor_says_which_kept_backup_depends_on_it() -> None:
    now = START + timedelta(days=21, hours=12)  # the window starts on the second chain's day 1
    items = backups_until(now)
    decisions = {d.item.id: d for d in plan(items, POLICY, now)}
    chains = chains_of(items)
    second = sorted(chains[bid(START + timedelta(days=7))])
    newest = second[-1]
    assert "pitr window: inside the last 14 days" in decisions[newest].reasons
    assert decisions[second[0]].reasons == [f"chain: {newest} depends on it"]
    assert all(decisions[m].keep for m in second)
    assert not any(decisions[m].keep for m in chains[bid(START)])


def test_min_keep_counts_chains_when_backups_stopped_long_ago() -> None:
    items = backups_until(START + timedelta(days=27, hours=23))  # four chains, then nothing
    now = START + timedelta(days=120)
    decisions = plan(items, POLICY, now)
    chains = chains_of(items)
    fulls = sorted(chains)
    kept = kept_ids(decisions)
    assert kept == set().union(*(chains[f] for f in fulls[1:]))  # the newest 3 chains, whole
    reasons = {d.item.id: d.reasons for d in decisions}
    newest_of_each = [max(chains[f]) for f in fulls[1:]]
    assert all("min-keep: in one of the newest 3 chains" in reasons[n] for n in newest_of_each)


def test_a_broken_chain_is_left_alone_with_the_command_that_deletes_it() -> None:
    now = START + timedelta(days=60)
    items = backups_until(START + timedelta(days=6, hours=18))  # one chain, long out of windows
    first_incremental = items[1]
    items = [i for i in items if i.parent_id is not None]  # its full is gone from the bucket
    more = [i for i in backups_until(now) if i.started_at >= START + timedelta(days=7)]
    decisions = plan(items + more, RetentionSettings(min_keep=1), now)
    broken = [d for d in decisions if d.item.id in {i.id for i in items}]
    assert broken and all(d.action is Action.KEEP for d in broken)
    for d in broken:
        assert any(
            r.startswith(f"broken chain: its ancestor {bid(START)} is gone")
            and f"`permafrost delete {first_incremental.id} --apply`" in r
            for r in d.reasons
        ), d.reasons


def test_a_pinned_incremental_keeps_its_ancestors_in_base() -> None:
    now = START + timedelta(days=90)
    items = backups_until(START + timedelta(days=30))
    inc = next(i for i in items if i.started_at == START + timedelta(days=2, hours=6))
    inc.tier = "keep"
    inc.pin = Pin("2026-10-06T06:00:00+00:00", "ops", "audit", "base")
    decisions = {d.item.id: d for d in plan(items, RetentionSettings(min_keep=1), now)}
    line = [i for i in items if i.started_at <= inc.started_at]  # its full and ancestors
    assert decisions[inc.id].reasons[0] == "pinned by ops: audit"
    assert all(decisions[i.id].keep for i in line)
    assert f"chain: {inc.id} depends on it" in decisions[bid(START)].reasons
    later = [
        i
        for i in items
        if START + timedelta(days=2, hours=6) < i.started_at < START + timedelta(days=7)
    ]
    assert later and all(decisions[i.id].action is Action.DELETE for i in later)


def test_a_broken_chain_takes_no_min_keep_place_and_no_window_start() -> None:
    now = START + timedelta(days=60)
    whole = backups_until(START + timedelta(days=6, hours=18))
    broken = [i for i in backups_until(START + timedelta(days=13, hours=18)) if i not in whole]
    broken = [i for i in broken if i.parent_id is not None]  # the second chain's full is gone
    decisions = {d.item.id: d for d in plan(whole + broken, RetentionSettings(min_keep=1), now)}
    newest = decisions[whole[-1].id]
    assert "min-keep: in one of the newest 1 chains" in newest.reasons
    assert any(r.startswith("pitr window: the window's start") for r in newest.reasons)
    assert all(decisions[i.id].keep for i in whole)
    assert all(decisions[i.id].reasons[0].startswith("broken chain") for i in broken)
