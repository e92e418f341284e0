"""The zerorpc protocol v3 wire format: events, their encoding and validation.

This module owns what goes on the wire and nothing else. It never touches a
socket, a clock or a greenlet, so everything here can be tested with plain
bytes.

An event is a msgpack array ``[header, name, args]``:

* ``header`` is a map. ``message_id`` (opaque bytes or str, unique per
  connection) names the event; every event after the first of a channel
  carries ``response_to`` = the id of the channel's first event, echoed with
  the type it arrived with. ``v`` is the protocol version, 3.
* ``name`` is the method to call, or one of the reply / control names below.
* ``args`` depends on the name: a list of positional arguments for a request,
  ``[result]`` for ``OK``, ``[name, message, traceback]`` for ``ERR``, the
  item itself for ``STREAM``.

zrpc's only additions are new event names and header keys that zerorpc peers
either answer with a clear error (``_zrpc_kwcall``) or ignore harmlessly
(``_zrpc_cancel``); see the README's "Wire protocol" section.
"""
from __future__ import annotations

import os
from itertools import count
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import msgpack

from .errors import ZrpcError

__all__ = [
    "VERSION",
    "OK",
    "ERR",
    "STREAM",
    "STREAM_DONE",
    "HEARTBEAT",
    "MORE",
    "CANCEL",
    "KWCALL",
    "CONTROL_EVENTS",
    "ProtocolError",
    "Event",
    "MessageId",
    "encode",
    "decode",
    "peek_header",
    "new_header",
    "reply_header",
    "message_ids",
    "error_args",
    "unwrap_error",
]

VERSION = 3

OK = "OK"
ERR = "ERR"
STREAM = "STREAM"
STREAM_DONE = "STREAM_DONE"
HEARTBEAT = "_zpc_hb"
MORE = "_zpc_more"
#: zrpc extension: the caller gave up (timeout, closed stream); the callee
#: stops the work. zerorpc peers ignore it and rely on heartbeats instead.
CANCEL = "_zrpc_cancel"
#: zrpc extension: a call with keyword arguments, args = [method, args, kwargs].
#: A zerorpc server has no such method and answers ERR NameError, which the
#: zrpc client turns into a clear "peer cannot take keyword arguments" error.
KWCALL = "_zrpc_kwcall"

#: Events that belong to the channel machinery, never to the caller.
CONTROL_EVENTS = frozenset((HEARTBEAT, MORE, CANCEL))

MessageId = Union[bytes, str]
Header = Dict[str, Any]
Event = Tuple[Header, str, Any]

_packer = msgpack.Packer(use_bin_type=True, autoreset=True)
_pack = _packer.pack


class ProtocolError(ZrpcError, ValueError):
    """A frame that is not a valid zerorpc v3 event.

    ``header`` is set when a valid header could still be read, so the
    receiver can answer the sender (or fail the right call) with an ``ERR``
    instead of dropping the message silently.
    """

    def __init__(self, message: str, header: Optional[Header] = None) -> None:
        super().__init__(message)
        self.header = header


def encode(header: Header, name: str, args: Any) -> bytes:
    """Pack one event. Raises TypeError if ``args`` holds a value msgpack cannot encode."""
    return _pack((header, name, args))


def _is_id(value: Any) -> bool:
    return type(value) is bytes or type(value) is str


def decode(payload: Any, max_size: Optional[int] = None) -> Event:
    """Unpack and validate one event; raise ProtocolError with a clear message if it is bad.

    ``payload`` is bytes or any buffer. ``max_size`` bounds its length.
    """
    size = len(payload)
    if max_size is not None and size > max_size:
        raise ProtocolError(
            f"message of {size} bytes exceeds the limit of {max_size} bytes",
            peek_header(payload),
        )
    try:
        event = msgpack.unpackb(payload, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types
        detail = f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__
        raise ProtocolError(f"payload is not valid msgpack ({detail})") from None
    if type(event) is not list or len(event) != 3:
        readable = event[0] if type(event) is list and event else None
        raise ProtocolError(
            f"payload must be a msgpack array [header, name, args], got {_describe(event)}",
            _valid_header(readable),
        )
    header, name, args = event
    if type(header) is not dict:
        raise ProtocolError(f"header must be a map, got {_describe(header)}")
    if not _is_id(header.get("message_id")):
        raise ProtocolError(
            f"header.message_id must be bytes or str, got {_describe(header.get('message_id'))}"
        )
    response_to = header.get("response_to")
    if response_to is not None and not _is_id(response_to):
        raise ProtocolError(f"header.response_to must be bytes or str, got {_describe(response_to)}")
    if type(name) is not str:
        raise ProtocolError(f"event name must be a str, got {_describe(name)}", header)
    return header, name, args


def peek_header(payload: Any) -> Optional[Header]:
    """Best effort: read only the header of a (possibly huge or broken) payload.

    Returns it only if its ids are well formed, so that a bad event can be
    answered with an ERR routed to its caller.
    """
    try:
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(len(payload), 1))
        unpacker.feed(payload)
        if unpacker.read_array_header() < 1:
            return None
        header = unpacker.unpack()
    except Exception:
        return None
    return _valid_header(header)


def _valid_header(header: Any) -> Optional[Header]:
    if type(header) is not dict or not _is_id(header.get("message_id")):
        return None
    if header.get("response_to") is not None and not _is_id(header["response_to"]):
        return None
    return header


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def message_ids() -> Iterator[bytes]:
    """Yield message ids unique to this generator: 32 ASCII hex bytes, like zerorpc-python.

    A random 96-bit base makes ids from different clients collide with
    negligible probability; ASCII keeps them safe for zerorpc-node, which
    uses them as object keys.
    """
    base = os.urandom(12).hex().encode()
    for n in count(int.from_bytes(os.urandom(3), "big")):
        yield b"%08x%s" % (n & 0xFFFFFFFF, base)


def new_header(message_id: MessageId) -> Header:
    """Header of the first event of a channel."""
    return {"message_id": message_id, "v": VERSION}


def reply_header(message_id: MessageId, channel_id: MessageId) -> Header:
    """Header of any later event on channel ``channel_id``."""
    return {"message_id": message_id, "v": VERSION, "response_to": channel_id}


def error_args(name: str, message: str, traceback: str) -> List[str]:
    """Args of an ERR event; zerorpc-node insists on exactly three strings."""
    return [str(name), str(message), str(traceback)]


def unwrap_error(args: Any) -> Tuple[str, str, str]:
    """Read the args of an ERR event, tolerating protocol v1/v2 and sloppy peers."""
    if isinstance(args, (list, tuple)):
        if len(args) >= 3:
            return _text(args[0]), _text(args[1]), _text(args[2])
        if len(args) == 1:  # protocol v1: [repr(exception)]
            return "RemoteError", _text(args[0]), ""
    return "RemoteError", _text(args), ""


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)
