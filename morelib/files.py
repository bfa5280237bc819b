"""Files the stages share: JSONL with ``file:line`` errors, atomic writes, an append-only store.

Every file a notebook hands to the next one goes through these helpers, so a broken file is
always reported the same way (``path:line: field 'x': what is wrong``) and a killed run never
leaves half a file behind:

* :func:`read_jsonl` reads one JSON object per line; :class:`FileFormatError` names file,
  line and field;
* :func:`write_json`, :func:`write_text` and :func:`write_jsonl` write to a temporary file and
  rename it over the target, so readers see the old file or the new one, never a mix;
* :class:`JsonlStore` is an append-only JSONL file for paid or slow work (expert replies,
  predictions): one writer at a time (a lock that dies with the process), and a torn last line
  left by a kill is ignored when reading and cut before the next append.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

log = logging.getLogger(__name__)


class FileFormatError(ValueError):
    """A file that cannot be read as expected; the message starts with ``path:line:``."""


def read_jsonl(path: str | os.PathLike, required: Sequence[str] = (), missing_ok: bool = False,
               torn_tail_ok: bool = False, check: Callable[[dict], None] | None = None) -> list[dict]:
    """The JSON objects of a JSONL file, one per non-blank line.

    ``required`` fields must be in every row. A missing file is an error unless ``missing_ok``
    (then ``[]``). With ``torn_tail_ok`` a last line that has no newline and does not parse (a
    write cut short by a kill) is skipped with a warning; anywhere else it is an error.
    ``check(row)`` may raise ``ValueError("field 'x': ...")``; it becomes a
    :class:`FileFormatError` naming the file and the line.
    """
    path = Path(path)
    if not path.exists():
        if missing_ok:
            return []
        raise FileNotFoundError(f"{path}: no such file")
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    tail = lines.pop()  # bytes after the last newline: empty unless the last write was cut short
    rows: list[dict] = []
    for number, line in enumerate([*lines, tail], start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as error:
            if torn_tail_ok and number == len(lines) + 1:
                log.warning("%s:%d: ignoring a torn last line (%d bytes) left by an interrupted write",
                            path, number, len(line))
                break
            raise FileFormatError(f"{path}:{number}: not a JSON object ({error})") from None
        if not isinstance(row, dict):
            raise FileFormatError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        for name in required:
            if name not in row:
                raise FileFormatError(f"{path}:{number}: field {name!r}: missing")
        if check is not None:
            try:
                check(row)
            except ValueError as error:
                raise FileFormatError(f"{path}:{number}: {error}") from None
        rows.append(row)
    return rows


def _umask() -> int:
    try:  # Linux shows it; setting it to read it would race with other threads' file creation
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a written file follows the umask
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temporary file, then rename)."""
    return _atomic_write(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, value: Any, indent: int | None = 2) -> Path:
    """Write ``value`` as JSON atomically; paths and other objects become strings."""
    return write_text(path, json.dumps(value, indent=indent, default=str, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's value; a broken file is a :class:`FileFormatError` naming it and the line."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except json.JSONDecodeError as error:
        raise FileFormatError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """Write ``rows`` as JSONL atomically (the whole file at once)."""
    return write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def _after_last_newline(fd: int, size: int, chunk: int = 1 << 20) -> int:
    """The offset just after the last newline before ``size`` (0 when there is none).

    Reads backwards a chunk at a time, so a torn line of any length is cut alone and every
    complete line before it is kept.
    """
    end = size
    while end > 0:
        start = max(0, end - chunk)
        position = os.pread(fd, end - start, start).rfind(b"\n")
        if position >= 0:
            return start + position + 1
        end = start
    return 0


class JsonlStore:
    """An append-only JSONL file that survives kills: use as ``with JsonlStore(p) as store: ...``.

    Opening takes an exclusive lock (a second writer fails at once, and the lock dies with the
    process, even on SIGKILL) and cuts a torn last line, so the next row starts on a fresh line.
    Each :meth:`append` is one ``write`` of one whole line.
    """

    def __init__(self, path: str | os.PathLike, required: Sequence[str] = ()):
        self.path = Path(path)
        self.required = tuple(required)
        self._fd: int | None = None

    def rows(self) -> list[dict]:
        """Every complete row (a torn last line is ignored); ``[]`` when the file does not exist."""
        return read_jsonl(self.path, required=self.required, missing_ok=True, torn_tail_ok=True)

    def open(self) -> "JsonlStore":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(f"{self.path}: another process is writing to this file") from None
        self._cut_torn_tail(fd)
        self._fd = fd
        return self

    def _cut_torn_tail(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return
        cut = _after_last_newline(fd, size)
        log.warning("%s: cutting a torn last line (%d bytes) left by an interrupted write", self.path, size - cut)
        os.ftruncate(fd, cut)

    def append(self, row: dict) -> None:
        if self._fd is None:
            raise RuntimeError(f"{self.path}: open the store before appending")
        data = memoryview((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
        while data:  # os.write may write less than asked
            data = data[os.write(self._fd, data):]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "JsonlStore":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()
