"""User-facing errors: one clear line naming the problem and the fix, exit code 2."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or environment, not a bug.

    The CLI prints `error: <message>` on one line and exits with `exit_code`; no traceback.
    """

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message} ({hint})")

    def one_line(self) -> str:
        text = self.message if self.hint is None else f"{self.message}; {self.hint}"
        return " ".join(text.split())
