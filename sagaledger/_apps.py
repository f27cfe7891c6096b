"""Finding the sagas a worker runs from a ``module:attr`` spec (``sagaledger worker --app``)."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from typing import Any

from sagaledger.sagas import Registry, Saga


class AppNotFoundError(LookupError):
    """The module or attribute an ``--app`` spec names is missing, or holds no sagas."""


def load_registry(spec: str) -> Registry:
    """Import ``module:attr`` and return the Registry (or sagas) it names.

    Args:
        spec: ``package.module:attribute``; the attribute may be dotted, and may
            hold a :class:`Registry`, a :class:`Saga` or an iterable of sagas.

    Raises:
        ValueError: the spec is not ``MODULE:ATTR``.
        AppNotFoundError: the module or attribute is missing, or holds no sagas.
        DefinitionError: the app defines an invalid saga (raised as it is imported).
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{spec!r}: expected MODULE:ATTR, e.g. myapp.sagas:registry")
    # Like `python -m`, find the user's app in the working directory.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (module_name + ".").startswith(exc.name + "."):
            raise  # a missing dependency of the app: its traceback says more
        raise AppNotFoundError(f"--app {spec}: no module named {exc.name!r}") from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise AppNotFoundError(f"--app {spec}: {module_name} has no attribute {attr!r}")
        target = getattr(target, part)
    registry = _as_registry(spec, target)
    if not len(registry):
        raise AppNotFoundError(f"--app {spec} holds no sagas")
    return registry


def _as_registry(spec: str, target: Any) -> Registry:
    if isinstance(target, Registry):
        return target
    if isinstance(target, Saga):
        return Registry([target])
    if isinstance(target, Iterable) and not isinstance(target, str | bytes):
        items = list(target)
        strays = [type(item).__name__ for item in items if not isinstance(item, Saga)]
        if strays:
            raise AppNotFoundError(f"--app {spec}: expected sagas, found {', '.join(strays)}")
        return Registry(items)
    raise AppNotFoundError(f"--app {spec} is a {type(target).__name__}, not a Registry or sagas")
