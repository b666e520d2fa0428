"""What a validator found wrong, and where: the ``Problem`` records shown as FILE:LINE:COL.

They live apart from the schema so that every part of it (the models, the hosts) can raise them
without importing the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the config, at ``loc`` relative to the model that found it.

    ``at_key`` points the position at the key itself (``port:``) rather than at its value.
    """

    loc: Loc
    message: str
    at_key: bool = False


class ConfigProblems(ValueError):
    """A validator's findings with their locations; the loader turns them into file positions."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(_describe_problem(p) for p in self.problems))


def _describe_problem(problem: Problem) -> str:
    where = dotted(problem.loc)
    return f"{where}: {problem.message}" if where else problem.message


def dotted(loc: Sequence[str | int]) -> str:
    """``('models', 'a', 'aliases', 0)`` as ``models.a.aliases[0]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
