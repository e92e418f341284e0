"""How results reach stdout: one line of JSON each, --indent, --array for streams, --raw.

msgpack results are not all JSON: bytes are printed as text when they are
valid UTF-8, else as the JSON string of their repr; other non-JSON values as
their repr. This module never writes to stderr and never touches the network.
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Optional, TextIO

__all__ = ["Output"]


class Output:
    """Results to ``stream`` as JSON (see "output" in ``zrpc --help`` for bytes and --raw)."""

    def __init__(self, stream: TextIO, raw: bool, indent: Optional[int]) -> None:
        self._stream = stream
        self._raw = raw
        self._indent = indent

    def text(self, text: str) -> None:
        """A line of plain text (listings, help)."""
        self._stream.write(text + "\n")
        self._stream.flush()

    def result(self, value: Any) -> None:
        """A call's result (indented if --indent)."""
        self._write(value, self._indent)

    def item(self, value: Any) -> None:
        """One stream item, on a line of its own."""
        self._write(value, None)

    def array(self, items: Iterable[Any]) -> None:
        """A whole stream as one JSON array, each item written as it arrives."""
        write = self._stream.write
        write("[")
        first = True
        try:
            for item in items:
                write(("" if first else ", ") + _dumps(item, None))
                self._stream.flush()
                first = False
        finally:
            write("]\n")  # even when interrupted, what was printed stays valid JSON
            self._stream.flush()

    def _write(self, value: Any, indent: Optional[int]) -> None:
        if self._raw and isinstance(value, (bytes, bytearray)):
            self._stream.flush()
            self._stream.buffer.write(bytes(value))
            self._stream.buffer.flush()
            return
        if self._raw and isinstance(value, str):
            self.text(value)
            return
        self.text(_dumps(value, indent))


def _dumps(value: Any, indent: Optional[int]) -> str:
    return json.dumps(_jsonable(value), ensure_ascii=False, indent=indent)


def _jsonable(value: Any) -> Any:
    """Make what msgpack produced printable as JSON: bytes become text (UTF-8) or their repr."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return repr(bytes(value))
    if isinstance(value, dict):
        return {_key(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return repr(value)  # e.g. msgpack.ExtType


def _key(key: Any) -> Any:
    if isinstance(key, (str, int, float, bool)) or key is None:
        return key
    value = _jsonable(key)
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
