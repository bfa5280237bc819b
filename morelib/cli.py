"""Command lines: options from settings dataclasses, one-line errors.

Every ``python -m morelib.X`` builds its parser here, so they all behave alike:

* options come from settings dataclasses through ``transformers.HfArgumentParser``: each
  field is an option (``--max_new_tokens`` and ``--max-new-tokens``) whose help is the field's
  ``metadata["help"]``, so a new setting is a new option with no parser code;
* ``--help`` works for the command and for every subcommand;
* a failure is one line on stderr, ``error: ...``, naming the file, field, path or URL, and
  the exit code is non-zero; ``--debug`` (before or after the subcommand) adds the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import traceback
from typing import Callable, Sequence, TypeVar

from transformers import HfArgumentParser

T = TypeVar("T")


class Parser(HfArgumentParser):
    """``HfArgumentParser`` whose usage errors are one line too, and whose help may say "25%"."""

    def add_argument(self, *args, **kwargs):
        if kwargs.get("help"):  # argparse reads '%' as a format character; field help says "25%"
            kwargs["help"] = kwargs["help"].replace("%", "%%")
        return super().add_argument(*args, **kwargs)

    def error(self, message: str):  # argparse's own errors: unknown option, missing argument, ...
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def make_parser(prog: str, description: str, dataclass_types: Sequence[type] = ()) -> Parser:
    """The top parser of a command, with ``--debug``."""
    parser = Parser(list(dataclass_types), prog=prog, description=description)
    parser.add_argument("--debug", action="store_true", help="on an error, show the traceback as well")
    return parser


def add_commands(parser: argparse.ArgumentParser):
    """The subcommands of ``parser`` (``add_command`` adds one)."""
    return parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)


def add_command(commands, name: str, help: str, dataclass_types: Sequence[type] = ()) -> Parser:
    """One subcommand whose options are the fields of ``dataclass_types``."""
    parser = commands.add_parser(name, help=help, description=help, dataclass_types=list(dataclass_types))
    # SUPPRESS: without --debug here, the top parser's value stands.
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="on an error, show the traceback as well")
    return parser


def settings(args: argparse.Namespace, cls: type[T]) -> T:
    """The dataclass ``cls`` built from the parsed options named after its fields."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.init})


def describe(error: BaseException) -> str:
    """One line for an exception: what went wrong and where (file, field, path or URL)."""
    if isinstance(error, OSError) and error.filename and error.strerror:
        return f"{error.filename}: {error.strerror}"
    if isinstance(error, KeyError) and error.args and isinstance(error.args[0], str):
        message = error.args[0]
    else:
        message = str(error)
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return "; ".join(lines) if lines else type(error).__name__


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
        command: Callable[[argparse.Namespace], int | None]) -> int:
    """Parse ``argv`` and run ``command``; any failure becomes ``error: ...`` and exit code 1."""
    args = parser.parse_args(argv)
    hide_secrets_in_logs()
    try:
        return int(command(args) or 0)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # every failure of a command line ends here, as one line
        return fail(error, getattr(args, "debug", False))


def fail(error: BaseException, debug: bool = False) -> int:
    """Print ``error: ...`` (after the traceback with ``debug``), with no secret in either; return 1."""
    from morelib.secrets import scrub

    if debug:
        print(scrub("".join(traceback.format_exception(error))), file=sys.stderr, end="")
    print(scrub(f"error: {describe(error)}"), file=sys.stderr)
    return 1


def hide_secrets_in_logs() -> None:
    """Scrub secrets from every record the root logger's handlers write (``--debug`` logs requests)."""
    import logging

    from morelib.secrets import ScrubFilter

    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, ScrubFilter) for f in handler.filters):
            handler.addFilter(ScrubFilter())

