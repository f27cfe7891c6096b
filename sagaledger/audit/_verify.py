"""Verifying the saga log: every run's hash chain, and the anchors of sealed periods.

Each event row carries ``sha256(previous hash + digest of the row)`` (see
``sagaledger.store._chain``). Walking a run's events in sequence order and
recomputing each hash shows:

- an **edited** row: its content no longer gives its hash, while the next row
  still chains from the hash it carries;
- a **deleted** row: a gap in the sequence numbers, and the next row chains
  from a hash no row has any more; the last rows of a run, deleted, leave the
  run's recorded chain head pointing past the last row;
- **reordered** rows: a row chains from a row other than the one before it.

What this proves, and what it does not, is in docs/audit.md: in short, a row
edited, deleted or moved by hand shows, unless whoever did it also rewrote the
rest of that run's chain; a sealed period's anchor, kept outside the
database, shows that too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sagaledger.store import SagaLog
from sagaledger.store._audit_log import ChainedEvent, find_anchors, period_digest, runs_with_events
from sagaledger.store._chain import digest, genesis, link


@dataclass(frozen=True)
class Problem:
    """One thing that is not as it was written.

    Attributes:
        kind: ``edited``, ``deleted``, ``reordered``, ``unhashed``, ``head`` (the
            run's chain head is wrong) or ``anchor`` (a sealed period changed).
        run_id: The run at fault (empty for an anchor).
        seq: The event's sequence number, where one row is at fault.
        event_id: The event row's id, where one row is at fault.
        message: What was found, naming the run and the row.
    """

    kind: str
    run_id: str
    seq: int | None
    event_id: int | None
    message: str


@dataclass
class Verification:
    """What a verification read and found."""

    runs: int = 0
    events: int = 0
    anchors: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        """True when nothing was found edited, deleted or reordered."""
        return not self.problems


def verify_log(
    log: SagaLog,
    *,
    run_ids: Sequence[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Verification:
    """Check the hash chain of every run (started in ``[since, until)``) and the anchors.

    Args:
        run_ids: Only these runs (the anchors are not checked then).
        since: Only runs started, and anchors of periods starting, at or after this.
        until: Only runs started, and anchors of periods starting, before this.
    """
    result = Verification()
    for run_id, head, chained in runs_with_events(
        log.engine, run_ids=run_ids, since=since, until=until
    ):
        result.runs += 1
        result.events += len(chained)
        result.problems.extend(check_run(run_id, head, chained))
    if run_ids is None:
        for anchor in find_anchors(log.engine, since, until):
            result.anchors += 1
            count, value = period_digest(log.engine, anchor.period_start, anchor.period_end)
            if value != anchor.digest:
                period = f"{anchor.period_start.isoformat()} to {anchor.period_end.isoformat()}"
                result.problems.append(
                    Problem(
                        "anchor",
                        "",
                        None,
                        None,
                        f"period {period} no longer matches its anchor (sealed "
                        f"{anchor.sealed_at.isoformat()} by {anchor.sealed_by}): it has "
                        f"{count} events, {anchor.events} when sealed",
                    )
                )
    return result


def check_run(run_id: str, head: str | None, chained: list[ChainedEvent]) -> list[Problem]:
    """The problems in one run's chain (its events in sequence order)."""
    if not chained:
        return [Problem("deleted", run_id, None, None, f"run {run_id}: every event is gone")]
    problems: list[Problem] = []
    digests = [digest(e.row) for e in chained]
    moved: set[str] = set()  # hashes of rows found out of place
    previous, last_seq = genesis(run_id), 0
    for n, event in enumerate(chained):
        where = f"run {run_id} event seq {event.seq} (row id {event.id})"

        def found(kind: str, what: str, at: ChainedEvent = event, place: str = where) -> None:
            problems.append(Problem(kind, run_id, at.seq, at.id, f"{place}: {what}"))

        gap = event.seq > last_seq + 1
        if gap:
            missing = [str(seq) for seq in (last_seq + 1, event.seq - 1)]
            found("deleted", f"seq {'..'.join(dict.fromkeys(missing))} before it deleted")
        if event.hash is None:
            found("unhashed", "carries no hash: written or altered outside sagaledger")
        elif link(previous, digests[n]) != event.hash and not gap:
            after = _written_after(run_id, chained, digests, n)
            if after is None:
                found("edited", "edited (or an event before it deleted, and the rest renumbered)")
            elif after not in moved:  # not merely displaced by a row moved before it
                moved.add(event.hash)
                was = "the run's start" if after == genesis(run_id) else _seq_of(chained, after)
                found("reordered", f"moved: it was written right after {was}")
        previous, last_seq = event.hash or previous, event.seq
    last = chained[-1]
    if head != last.hash:
        kept = next((e for e in chained if e.hash == head), None)
        what = (
            f"events after seq {kept.seq} were added by hand"
            if kept is not None
            else f"events after seq {last.seq} were deleted, or the chain head was altered"
        )
        problems.append(
            Problem(
                "head",
                run_id,
                last.seq,
                last.id,
                f"run {run_id}: its chain head is not the hash of its last event "
                f"(seq {last.seq}): {what}",
            )
        )
    return problems


def _written_after(
    run_id: str, chained: list[ChainedEvent], digests: list[str], n: int
) -> str | None:
    """The hash event ``n`` was chained from, if it is the start or another row's."""
    event = chained[n]
    candidates = [genesis(run_id), *(e.hash for e in chained if e is not event and e.hash)]
    return next((h for h in candidates if link(h, digests[n]) == event.hash), None)


def _seq_of(chained: list[ChainedEvent], value: str) -> str:
    return next(f"seq {e.seq}" for e in chained if e.hash == value)
