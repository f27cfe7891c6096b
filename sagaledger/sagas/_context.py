"""What a step's action and compensation see when they run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from pydantic import BaseModel

InputT = TypeVar("InputT", bound=BaseModel)
ModelT = TypeVar("ModelT", bound=BaseModel)


def idempotency_key(run_id: str, step: str, phase: str) -> str:
    """The key a step passes to remote systems: the same on every retry of this phase."""
    return f"{run_id}:{step}:{phase}"


@dataclass(frozen=True)
class StepContext(Generic[InputT]):
    """Given to a forward action (and its probe).

    Attributes:
        run_id: The run this step belongs to.
        saga: The saga's name.
        version: The saga's version the run started on.
        step: This step's name.
        attempt: 1 for the first attempt, then 2, 3, ...
        idempotency_key: Pass it to every remote call; identical on every retry.
        input: The run's validated input.
        outputs: The recorded outputs of the steps completed before this one, by name.
    """

    run_id: str
    saga: str
    version: int
    step: str
    attempt: int
    idempotency_key: str
    input: InputT
    outputs: Mapping[str, Any]

    @overload
    def output(self, step: str) -> Any: ...
    @overload
    def output(self, step: str, model: type[ModelT]) -> ModelT: ...
    def output(self, step: str, model: type[BaseModel] | None = None) -> Any:
        """Return an earlier step's recorded output, optionally parsed into ``model``.

        Raises:
            KeyError: ``step`` has not completed in this run (the message names it).
        """
        if step not in self.outputs:
            raise KeyError(f"step {step!r} has no recorded output in run {self.run_id}")
        value = self.outputs[step]
        return model.model_validate(value) if model is not None else value


@dataclass(frozen=True)
class CompensationContext(Generic[InputT]):
    """Given to a compensating action.

    Attributes:
        run_id: The run being compensated.
        saga: The saga's name.
        version: The saga's version the run started on.
        step: The forward step being undone.
        attempt: 1 for the first attempt of this compensation, then 2, 3, ...
        idempotency_key: Differs from the forward step's key; identical on every retry.
        input: The run's validated input.
        output: What the forward step recorded as its output.
        reason: Why the run is being compensated.
    """

    run_id: str
    saga: str
    version: int
    step: str
    attempt: int
    idempotency_key: str
    input: InputT
    output: Any
    reason: str

    def output_as(self, model: type[ModelT]) -> ModelT:
        """Return the forward step's output parsed into ``model``."""
        return model.model_validate(self.output)
