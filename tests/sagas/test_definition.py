"""Saga definitions and the registry: bad definitions fail early and say where."""

from __future__ import annotations

import pickle
import random
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from sagaledger import (
    DefinitionError,
    DuplicateSagaError,
    PermanentError,
    Registry,
    RetryableError,
    RetryPolicy,
    RetrySafety,
    Saga,
    UnknownSagaError,
    step,
)
from sagaledger._errors import InputValidationError, UnknownRunError


class In(BaseModel):
    n: int


def noop(ctx: Any) -> None:
    return None


def safe(name: str, **kw: Any) -> Any:
    kw.setdefault("retry_safety", RetrySafety.IDEMPOTENCY_KEY)
    if not ({"compensate", "pivot", "no_compensation"} & kw.keys()):
        kw["compensate"] = noop
    return step(name, **kw)(noop)


def test_a_duplicate_step_name_is_refused_naming_saga_and_step() -> None:
    with pytest.raises(DefinitionError, match=r"saga 'shop' step 'charge': duplicate step name"):
        Saga("shop", 1, In, [safe("charge"), safe("ship"), safe("charge")])


def test_a_step_without_retry_safety_is_refused_naming_it() -> None:
    bare = step("charge", compensate=noop)(noop)
    with pytest.raises(
        DefinitionError, match=r"saga 'shop' step 'charge': no retry_safety declared"
    ):
        Saga("shop", 1, In, [safe("reserve"), bare])


@pytest.mark.parametrize(
    "declaration",
    [{}, {"compensate": noop, "pivot": True}, {"pivot": True, "no_compensation": "x"}],
)
def test_a_step_declares_exactly_one_way_to_be_undone(declaration: dict[str, Any]) -> None:
    bad = step("ship", retry_safety=RetrySafety.NATURAL, **declaration)(noop)
    with pytest.raises(DefinitionError, match=r"step 'ship': declare exactly one of"):
        Saga("shop", 1, In, [bad])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "bad name!"}, "invalid saga name"),
        ({"version": 0}, "version must be an int >= 1"),
        ({"input": dict}, "input must be a pydantic BaseModel"),
        ({"steps": []}, "at least one step"),
        ({"steps": [noop]}, "not a Step"),
    ],
)
def test_other_invalid_sagas_are_refused(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {
        "name": "shop",
        "version": 1,
        "input": In,
        "steps": [safe("a")],
        **kwargs,
    }
    with pytest.raises(DefinitionError, match=message):
        Saga(**args)


def test_the_registry_refuses_duplicates_and_lists_what_it_has() -> None:
    registry = Registry(
        [Saga("shop", 1, In, [safe("a")]), Saga("shop", 2, In, [safe("a"), safe("b")])]
    )
    with pytest.raises(DuplicateSagaError, match="'shop' version 2 is already registered"):
        registry.register(Saga("shop", 2, In, [safe("a")]))
    assert registry.get("shop").version == 2
    assert registry.get("shop", 1).version == 1
    with pytest.raises(
        UnknownSagaError, match=r"unknown saga 'refund'; registered: shop v1, shop v2"
    ):
        registry.get("refund")


def test_the_fingerprint_follows_the_shape_not_the_code() -> None:
    base = Saga("shop", 1, In, [safe("a"), safe("b")])
    same = Saga(
        "shop",
        1,
        In,
        [
            step("a", compensate=noop, retry_safety=RetrySafety.IDEMPOTENCY_KEY)(lambda c: 1),
            safe("b"),
        ],
    )
    assert base.fingerprint == same.fingerprint
    assert base.fingerprint != Saga("shop", 1, In, [safe("b"), safe("a")]).fingerprint
    assert base.fingerprint != Saga("shop", 1, In, [safe("a"), safe("b", pivot=True)]).fingerprint


def test_back_off_grows_is_capped_and_jittered() -> None:
    policy = RetryPolicy(
        initial_backoff=timedelta(seconds=1),
        max_backoff=timedelta(seconds=10),
        multiplier=2,
        jitter=0.2,
    )
    rng = random.Random(7)
    delays = [policy.backoff(n, rng).total_seconds() for n in range(1, 8)]
    assert 0.8 <= delays[0] <= 1.2 and 1.6 <= delays[1] <= 2.4 and 3.2 <= delays[2] <= 4.8
    assert all(d <= 10 for d in delays) and delays[-1] >= 8
    assert len({policy.backoff(3, rng) for _ in range(10)}) > 1  # jitter spreads retries


def test_exceptions_survive_pickling_with_their_attributes() -> None:
    for error in [
        RetryableError("busy", retry_after=timedelta(seconds=3)),
        PermanentError("declined"),
        DefinitionError("bad", saga="s", step="t"),
        InputValidationError("s", [{"loc": ("n",), "msg": "required"}]),
        UnknownRunError("r1"),
    ]:
        copy = pickle.loads(pickle.dumps(error))
        assert (
            type(copy) is type(error)
            and str(copy) == str(error)
            and copy.__dict__ == error.__dict__
        )
