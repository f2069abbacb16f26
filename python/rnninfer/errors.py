"""Exception types raised by rnninfer."""

from __future__ import annotations

__all__ = ["ModelFormatError"]


class ModelFormatError(ValueError):
    """A model file or a source checkpoint is malformed or unsupported.

    The message lists every problem found, one per line, so that a user fixing
    a converter or a file sees all of them at once rather than one per attempt.
    """

    def __init__(self, problems: str | list[str], *, source: str | None = None) -> None:
        if isinstance(problems, str):
            problems = [problems]
        self.problems: list[str] = list(problems)
        self.source = source
        head = f"{source}: " if source else ""
        if len(self.problems) == 1:
            msg = head + self.problems[0]
        else:
            msg = head + f"{len(self.problems)} problems:\n" + "\n".join(
                f"  - {p}" for p in self.problems
            )
        super().__init__(msg)
