"""Errors a user can fix, as one family.

A ``UserError`` means the input is wrong or something is missing (a config value, a file, model weights, an extra
package, a store): the command line prints its message as one line and exits 2, so the message must say what is
wrong and how to fix it. Anything else is a bug and keeps its traceback. Subclasses also derive from the builtin
error a caller would expect (``ValueError`` for bad values, ``FileNotFoundError`` for missing files), so code that
catches those keeps working.
"""

from __future__ import annotations


class UserError(Exception):
    """An error the user can fix; its message is one line naming the fix."""


class InputError(UserError, ValueError):
    """A value given by the user (an option, a request field, a file's content) that cannot be used."""


class MissingError(UserError, FileNotFoundError):
    """Something the user named or needs is not there (a file, a folder, weights)."""


class MissingExtraError(UserError, ImportError):
    """An optional dependency is not installed; the message names the pip extra."""


class UnknownNameError(UserError, KeyError):
    """A name the user gave (a benchmark, scorer, run, training set) that is not known; the message lists what is.

    Unlike a plain ``KeyError`` its ``str()`` is the message itself, not the message in quotes.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


def one_line(error: BaseException) -> str:
    """An error's message on one line (a multi-line message, e.g. a YAML parser's, joined with "; ")."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__
