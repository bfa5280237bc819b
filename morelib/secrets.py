"""Secrets never reach a file or the console: the values to hide, and scrubbing them from text.

A secret is an API key read from the environment (``OPENAI_API_KEY``, any ``*_API_KEY``,
``*_TOKEN``, ``*_SECRET``, ``*_PASSWORD``) or one this process was handed and registered with
:func:`remember` (a key read from a variable of any other name). :func:`scrub` replaces each
with ``<secret>``; the chain runner scrubs every executed notebook and its log, the command
lines scrub ``--debug`` tracebacks and log records (:class:`ScrubFilter`).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Iterable, Mapping

SECRET_NAME = re.compile(r"(^|_)(API_KEY|APIKEY|TOKEN|SECRET|PASSWORD)$", re.IGNORECASE)
MIN_LENGTH = 6  # shorter values ("EMPTY", "1") are placeholders, and replacing them would garble text
MASK = "<secret>"
_remembered: set[str] = set()


def remember(value: str | None) -> None:
    """Treat ``value`` as a secret from now on (in this process)."""
    if value and len(value) >= MIN_LENGTH:
        _remembered.add(value)


def secret_values(environ: Mapping[str, str] | None = None, names: Iterable[str] = ()) -> list[str]:
    """The secrets to hide, longest first: secret-looking variables, ``names``, and those remembered."""
    environ = os.environ if environ is None else environ
    wanted = set(names)
    found = {value for name, value in environ.items() if (SECRET_NAME.search(name) or name in wanted)}
    found |= _remembered
    return sorted((v for v in found if v and len(v) >= MIN_LENGTH), key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with every secret replaced by ``<secret>``."""
    for secret in secret_values() if secrets is None else secrets:
        text = text.replace(secret, MASK)
    return text


def scrub_file(path: str | os.PathLike, secrets: Iterable[str] | None = None) -> bool:
    """Rewrite ``path`` (atomically) without its secrets; True when there were any."""
    from morelib.files import write_text

    path = Path(path)
    secrets = secret_values() if secrets is None else list(secrets)
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return False
    clean = scrub(text, secrets)
    if clean == text:
        return False
    write_text(path, clean)
    return True


class ScrubFilter(logging.Filter):
    """A log filter that formats each record and hides the secrets in it (``secrets``: those of
    :func:`secret_values` at each record)."""

    def __init__(self, secrets: Iterable[str] | None = None):
        super().__init__()
        self.secrets = None if secrets is None else list(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = scrub(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info), self.secrets)
        elif record.exc_text:
            record.exc_text = scrub(record.exc_text, self.secrets)
        return True
