"""Every simulator's effects as one timeline, each attributed to the run that caused it.

Each simulator keeps its own ledger. Merged in the order they were applied,
the effects tell what sagas did across systems: a late failure's compensations
mirror its steps. An effect names its run through its key: the connectors send
every call under the step's idempotency key, ``RUN:STEP:PHASE``, and the ERP's
external ids are that key. Where a service keys its effects otherwise (SMTP by
the ``Message-ID`` derived from the key), ``aliases`` says which run a key is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sagaledger.connectors.simulators._faults import Effect


@dataclass(frozen=True)
class TimelineEntry:
    """One effect, the simulator that applied it, and the run that caused it.

    Attributes:
        system: The simulator's name (``payments``, ``erp``, ``smtp``, ``email_api``).
        effect: What it applied.
        run_id: The run whose step caused it, when its key tells.
        business_key: That run's business key, when the timeline was told it.
    """

    system: str
    effect: Effect
    run_id: str | None = None
    business_key: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The effect's fields (``operation``, ``ref``, ``key``, ...) and whose it is."""
        whose = {"system": self.system, "run_id": self.run_id, "business_key": self.business_key}
        return {**whose, **asdict(self.effect)}


class Timeline:
    """Every simulator's effects, oldest first, each attributed to its run.

    Args:
        ledgers: Each simulator's effects by its name, as
            :meth:`SimulatorSuite.ledgers` returns them.
        business_keys: Run id -> business key, to label each effect with its run's.
        aliases: Effect key -> run id, for keys that do not start with the run id.
    """

    def __init__(
        self,
        ledgers: Mapping[str, Iterable[Effect]],
        *,
        business_keys: Mapping[str, str] | None = None,
        aliases: Mapping[str, str] | None = None,
    ):
        labels = business_keys or {}
        entries = []
        for system, effects in ledgers.items():
            for effect in effects:
                run_id = _run_of(effect, aliases)
                label = None if run_id is None else labels.get(run_id)
                entries.append(TimelineEntry(system, effect, run_id, label))
        # A stable sort: effects applied at the same instant keep their ledger's order.
        entries.sort(key=lambda entry: datetime.fromisoformat(entry.effect.at))
        self.entries: tuple[TimelineEntry, ...] = tuple(entries)

    def __iter__(self) -> Iterator[TimelineEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def of_run(
        self, run_id: str, system: str | None = None, operation: str | None = None
    ) -> list[TimelineEntry]:
        """What ``run_id`` caused (in ``system``, by ``operation``, when given), oldest first."""
        return [
            entry
            for entry in self.entries
            if entry.run_id == run_id
            and system in (None, entry.system)
            and operation in (None, entry.effect.operation)
        ]

    def as_json(self) -> list[dict[str, Any]]:
        """Every entry as :meth:`TimelineEntry.as_json`, oldest first."""
        return [entry.as_json() for entry in self.entries]


def _run_of(effect: Effect, aliases: Mapping[str, str] | None = None) -> str | None:
    """The run whose step caused ``effect``: the one ``aliases`` names, or its key's first part.

    None when the effect has no key, or a key that names no run.
    """
    key = effect.key
    if key is None:
        return None
    if aliases is not None and key in aliases:
        return aliases[key]
    run_id, colon, _ = key.partition(":")
    return run_id if colon else None
