"""Exceptions that lmrec raises for mistakes a person can make (bad files, bad arguments)."""

from __future__ import annotations

__all__ = ["DataError", "LmrecError", "Problem", "StoreError"]

from dataclasses import dataclass


class LmrecError(Exception):
    """Base class: an error whose message is meant for the person running lmrec."""


class StoreError(LmrecError):
    """The SQL store cannot be opened or does not have the expected schema."""


@dataclass(frozen=True)
class Problem:
    """One bad value in an input file: where it is and what was expected."""

    file: str
    line: int | None
    column: str | None
    value: str | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
        col = f" column '{self.column}':" if self.column else ""
        val = f" (got {self.value!r})" if self.value is not None else ""
        return f"{where}:{col} {self.message}{val}"


class DataError(LmrecError):
    """Input data is invalid; `problems` lists each bad place (file, line, column)."""

    def __init__(self, problems: list[Problem] | Problem, *, total: int | None = None):
        if isinstance(problems, Problem):
            problems = [problems]
        self.problems = list(problems)
        self.total = total if total is not None else len(self.problems)
        shown = "\n".join(f"  {p}" for p in self.problems[:20])
        more = self.total - min(len(self.problems), 20)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        head = "1 problem" if self.total == 1 else f"{self.total} problems"
        super().__init__(f"invalid input, {head}; nothing was written:\n{shown}{tail}")
