"""Every parameter's constraints, declared once, checked once, and worded in the caller's own names.

A table of `Rule`s says what each setting must be: its kind (an integer, a number, one of some
names, a tuple of sizes) and its range. `checked(rules, values)` refuses the first value that
breaks its rule with a `ParamError`, which reads in Python's names (`eval_every must be at least
1, got 0`) and, through `for_flags()`, in the command line's (`--eval-every must be at least 1`).

Nothing is coerced: `True` is not an integer here, 10.9 is not 10, '64' is not (64,). A value of
the wrong kind is refused, never converted, so what trains is exactly what was asked for.
(scikit-learn's `_param_validation` is the model: constraints as data, checked at `fit`.)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpunet.errors import ConfigError, GpunetError


@dataclass(frozen=True)
class Rule:
    """What one parameter must be. `kind`: "int", "number", "choice", "sizes" or "bool"."""

    name: str  # the Python name (a keyword argument, a field)
    flag: str  # the command line's name for it
    kind: str
    low: float | None = None  # inclusive bounds, where they apply
    high: float | None = None
    choices: tuple[str, ...] = ()
    optional: bool = False  # None is allowed (and means the documented default behaviour)
    above: float | None = None  # an exclusive lower bound (a learning rate is above 0)

    def problem(self, value: Any) -> str | None:
        """Why `value` breaks this rule, or None."""
        if value is None:
            return None if self.optional else "must be given"
        if self.kind == "int":
            return _integer_problem(value, self)
        if self.kind == "number":
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                return f"must be a number, got {_shown(value)}"
            if not math.isfinite(float(value)):
                return f"must be a finite number, got {value}"
            return self._range_problem(float(value))
        if self.kind == "choice":
            if not isinstance(value, str) or value not in self.choices:
                got = repr(value[:60]) if isinstance(value, str) else _shown(value)  # a text needs no "(a str)"
                return f"must be one of {', '.join(self.choices)}, got {got}"
            return None
        if self.kind == "bool":
            return None if isinstance(value, bool) else f"must be True or False, got {_shown(value)}"
        if self.kind == "sizes":
            if isinstance(value, numbers.Integral) and not isinstance(value, bool):
                value = (value,)  # one hidden layer of that size, as scikit-learn reads hidden_layer_sizes=64
            if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
                return f"must be a sequence of layer sizes such as (16, 16), got {_shown(value)}"
            for size in value:
                if _integer_problem(size, self):
                    return f"must hold positive integers, got {_shown(tuple(value))}"
            return None
        raise AssertionError(f"unknown rule kind {self.kind}")

    def _range_problem(self, number: float) -> str | None:
        if self.above is not None and not number > self.above:
            return f"must be above {self.above:g}, got {number:g}"
        if self.low is not None and number < self.low:
            return f"must be at least {self.low:g}, got {number:g}"
        if self.high is not None and number > self.high:
            return f"must be at most {self.high:g}, got {number:g}"
        return None


def _integer_problem(value: Any, rule: Rule) -> str | None:
    # bool is an int to Python, never a size or a count to a user; numpy's integers are integers.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return f"must be an integer, got {_shown(value)}"
    return rule._range_problem(int(value))


def _shown(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    plain_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return text if plain_number else f"{text} (a {type(value).__name__})"


class ParamError(ConfigError):
    """A parameter that breaks its rule. str(): in Python's names; for_flags(): in the command line's."""

    def __init__(self, rule: Rule, problem: str) -> None:
        self.rule, self.problem = rule, problem
        super().__init__(f"{rule.name} {problem}")

    def for_flags(self) -> str:
        text = f"{self.rule.flag} {self.problem}"
        return f"{text}; {self.hint}" if self.hint else text


def worded_for_flags(error: BaseException) -> str:
    """An error as the command line shows it: a gpunet error in its flags' words (GpunetError.for_flags),
    anything else as it is."""
    return error.for_flags() if isinstance(error, GpunetError) else str(error)


def check(rules: Mapping[str, Rule], values: Mapping[str, Any]) -> None:
    """Raise ParamError for the first value (in the table's order) that breaks its rule."""
    for name, rule in rules.items():
        if name in values:
            problem = rule.problem(values[name])
            if problem:
                raise ParamError(rule, problem)


def table(*rules: Rule) -> dict[str, Rule]:
    return {rule.name: rule for rule in rules}


def sizes_tuple(value: int | Sequence[int]) -> tuple[int, ...]:
    """Checked sizes as the tuple a config stores: a list (from JSON) is the same sizes, an int one layer."""
    if isinstance(value, (int, numbers.Integral)):  # numpy integers too
        return (int(value),)
    return tuple(int(v) for v in value)
