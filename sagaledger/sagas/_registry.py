"""The explicit set of sagas a process can run, by (name, version)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sagaledger._errors import DuplicateSagaError, UnknownSagaError
from sagaledger.sagas._definition import Saga


class Registry:
    """Holds sagas by name and version; refuses duplicates.

    Args:
        sagas: Sagas to register at once.
    """

    def __init__(self, sagas: Iterable[Saga] = ()):
        self._sagas: dict[tuple[str, int], Saga] = {}
        for saga in sagas:
            self.register(saga)

    def register(self, saga: Saga) -> Saga:
        """Add ``saga``; return it, so this also works as a one-line call.

        Raises:
            DuplicateSagaError: the same name and version is already registered.
        """
        if not isinstance(saga, Saga):
            raise TypeError(f"expected a Saga, got {type(saga).__name__}")
        key = (saga.name, saga.version)
        if key in self._sagas:
            raise DuplicateSagaError(
                f"saga {saga.name!r} version {saga.version} is already registered"
            )
        self._sagas[key] = saga
        return saga

    def get(self, name: str, version: int | None = None) -> Saga:
        """Return the saga ``name`` at ``version`` (the highest when omitted).

        Raises:
            UnknownSagaError: nothing matches; the message lists what is registered.
        """
        if version is None:
            versions = [v for (n, v) in self._sagas if n == name]
            if versions:
                return self._sagas[(name, max(versions))]
        elif (name, version) in self._sagas:
            return self._sagas[(name, version)]
        wanted = f"saga {name!r}" + (f" version {version}" if version is not None else "")
        raise UnknownSagaError(f"unknown {wanted}; registered: {self.describe() or 'none'}")

    def find(self, name: str, version: int) -> Saga | None:
        """Return the saga at exactly (name, version), or None."""
        return self._sagas.get((name, version))

    def definitions(self) -> set[tuple[str, int, str]]:
        """(name, version, fingerprint) of every registered saga."""
        return {(s.name, s.version, s.fingerprint) for s in self._sagas.values()}

    def event_names(self) -> set[str]:
        """The names of the external events the registered sagas wait for."""
        return {
            name
            for saga in self._sagas.values()
            for s in saga.steps
            if isinstance(name := getattr(s.wait, "event", None), str)
        }

    def describe(self) -> str:
        """A short list of what is registered, for error messages."""
        return ", ".join(f"{n} v{v}" for (n, v) in sorted(self._sagas))

    def __iter__(self) -> Iterator[Saga]:
        return iter(self._sagas.values())

    def __len__(self) -> int:
        return len(self._sagas)
