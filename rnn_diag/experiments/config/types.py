"""Field types shared by the config's sections: numbers that refuse ``true``/``false``."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError

__all__ = ["NonNegativeInt", "PositiveFloat", "PositiveInt", "not_bool"]


def not_bool(value: Any) -> Any:
    """Refuse YAML's ``true``/``false`` where a number is expected (pydantic takes them as 1/0)."""
    if isinstance(value, bool):
        raise PydanticCustomError("number_not_bool", "expected a number")
    return value


PositiveInt = Annotated[int, BeforeValidator(not_bool), Field(gt=0)]
NonNegativeInt = Annotated[int, BeforeValidator(not_bool), Field(ge=0)]
PositiveFloat = Annotated[float, BeforeValidator(not_bool), Field(gt=0, allow_inf_nan=False)]
