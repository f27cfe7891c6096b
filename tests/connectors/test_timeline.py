"""The simulators' ledgers merged into one timeline, each effect with its run."""

from __future__ import annotations

from sagaledger.connectors.simulators import Effect, Timeline


def effect(operation: str, key: str | None, at: str, ref: str = "r") -> Effect:
    return Effect(operation, ref, key, at=f"2030-01-01T00:00:{at}+00:00")


def test_effects_are_merged_oldest_first_and_attributed_to_their_runs() -> None:
    ledgers = {
        "payments": [
            effect("charge", "run1:charge:forward", "02"),
            effect("refund", "run1:charge:compensate", "05"),
        ],
        "erp": [
            effect("reserve", "run1:reserve:forward", "01"),
            effect("release", "run1:reserve:compensate", "06"),
            effect("reserve", "run2:reserve:forward", "03"),
        ],
        "smtp": [effect("email_sent", "<abc@shop.example>", "04")],
    }
    timeline = Timeline(
        ledgers,
        business_keys={"run1": "ORD-1", "run2": "ORD-2"},
        aliases={"<abc@shop.example>": "run2"},
    )

    assert [(e.system, e.effect.operation, e.run_id) for e in timeline] == [
        ("erp", "reserve", "run1"),
        ("payments", "charge", "run1"),
        ("erp", "reserve", "run2"),
        ("smtp", "email_sent", "run2"),
        ("payments", "refund", "run1"),
        ("erp", "release", "run1"),
    ]
    assert [e.effect.operation for e in timeline.of_run("run1", system="erp")] == [
        "reserve",
        "release",
    ]
    assert timeline.as_json()[3]["business_key"] == "ORD-2"


def test_an_effect_whose_key_names_no_run_belongs_to_none() -> None:
    timeline = Timeline({"payments": [effect("charge", None, "01"), effect("charge", "x", "02")]})
    assert [e.run_id for e in timeline] == [None, None]
    assert len(timeline) == 2
