"""The wire format on its own: no sockets."""
import msgpack
import pytest

from zrpc.core import protocol
from zrpc.core.protocol import ProtocolError


def test_round_trip_matches_zerorpc_layout():
    payload = protocol.encode(protocol.new_header(b"id1"), "add", [1, 2])
    # zerorpc packs (header, name, args) with use_bin_type=True and unpacks with raw=False.
    assert msgpack.unpackb(payload, raw=False) == [{"message_id": b"id1", "v": 3}, "add", [1, 2]]
    assert protocol.decode(payload) == ({"message_id": b"id1", "v": 3}, "add", [1, 2])


def test_reply_header_echoes_channel_id_with_its_type():
    for channel_id in (b"bin-id", "str-id"):
        header = protocol.reply_header(b"x", channel_id)
        assert header["response_to"] == channel_id
        assert type(header["response_to"]) is type(channel_id)


def test_message_ids_are_unique_ascii_hex_of_zerorpc_length():
    ids = protocol.message_ids()
    seen = {next(ids) for _ in range(10000)}
    assert len(seen) == 10000
    sample = next(iter(seen))
    assert len(sample) == 32 and int(sample, 16) >= 0
    other = next(protocol.message_ids())
    assert other[8:] != sample[8:]  # a random base per generator


@pytest.mark.parametrize(
    "payload, fragment",
    [
        (b"\xc1", "not valid msgpack"),
        (b"", "not valid msgpack"),
        (msgpack.packb([{"message_id": b"a", "v": 3}, "x"]), "[header, name, args]"),
        (msgpack.packb({"a": 1}), "[header, name, args]"),
        (msgpack.packb(["nothdr", "x", []]), "header must be a map"),
        (msgpack.packb([{"v": 3}, "x", []]), "message_id"),
        (msgpack.packb([{"message_id": 5}, "x", []]), "message_id"),
        (msgpack.packb([{"message_id": b"a", "response_to": 1.5}, "x", []]), "response_to"),
        (msgpack.packb([{"message_id": b"a"}, 42, []]), "name must be a str"),
    ],
)
def test_bad_payloads_raise_protocol_error_with_a_clear_message(payload, fragment):
    with pytest.raises(ProtocolError) as info:
        protocol.decode(payload)
    assert fragment in str(info.value)


def test_protocol_error_keeps_a_readable_header_so_the_caller_can_be_answered():
    with pytest.raises(ProtocolError) as info:
        protocol.decode(msgpack.packb([{"message_id": b"q", "v": 3}, 42, []]))
    assert info.value.header["message_id"] == b"q"
    with pytest.raises(ProtocolError) as info:
        protocol.decode(msgpack.packb([{"message_id": b"q"}, "x"]))
    assert info.value.header["message_id"] == b"q"


def test_size_limit_is_checked_before_decoding_and_keeps_the_header():
    payload = protocol.encode(protocol.new_header(b"big"), "echo", [b"x" * 5000])
    with pytest.raises(ProtocolError) as info:
        protocol.decode(payload, max_size=1000)
    assert "exceeds the limit of 1000 bytes" in str(info.value)
    assert info.value.header == {"message_id": b"big", "v": 3}


def test_unwrap_error_tolerates_v1_and_sloppy_peers():
    assert protocol.unwrap_error(["ValueError", "bad", "tb"]) == ("ValueError", "bad", "tb")
    assert protocol.unwrap_error(["ValueError('bad')"]) == ("RemoteError", "ValueError('bad')", "")
    assert protocol.unwrap_error(None) == ("RemoteError", "", "")
    assert protocol.unwrap_error([b"N", b"m", None]) == ("N", "m", "")


def test_encode_refuses_values_msgpack_cannot_carry():
    with pytest.raises(TypeError):
        protocol.encode(protocol.new_header(b"a"), "f", [object()])


# -- bad input: every readable request keeps its header; limits bound the cost ----------

import struct  # noqa: E402

HDR = {"message_id": b"bad1", "v": 3}


def _event(args_bytes: bytes, name: bytes = b"\xa4echo") -> bytes:
    return b"\x93" + msgpack.packb(HDR) + name + args_bytes


def _nested(depth: int) -> bytes:
    return b"\x91" * (depth - 1) + b"\x90"


BAD_BODIES = [
    ("truncated args", protocol.encode(HDR, "echo", [b"x" * 100])[:-10], "incomplete"),
    ("args declaring 2^32 items", _event(b"\xdd\xff\xff\xff\xff"), "max_array_len"),
    ("invalid UTF-8 in a str", _event(b"\x91\xa2\xff\xfe"), "utf-8"),
    ("malformed timestamp ext", _event(b"\x91\xd7\xff" + b"\xff" * 8), "nanoseconds"),
    ("timestamp of 5 bytes", _event(b"\x91\xc7\x05\xff" + b"\x00" * 5), "Timestamp"),
    ("payload of 4 items", b"\x94" + msgpack.packb(HDR) + b"\xa4echo\x90\xc0", "array of 4 items"),
    ("nesting 1,000 deep", _event(_nested(1000)), "nested deeper than 32"),
    ("nesting 2,000 deep (past msgpack's own stack)", _event(_nested(2000)), "nested deeper than 32"),
    ("trailing bytes", protocol.encode(HDR, "echo", [1]) + b"\x00", "ExtraData"),
    ("map with an int key", _event(b"\x91\x81\x01\x02"), "not allowed for map key"),
]


@pytest.mark.parametrize("what, payload, fragment", BAD_BODIES, ids=[w for w, _, _ in BAD_BODIES])
def test_a_broken_body_after_a_valid_header_raises_protocol_error_with_the_header(what, payload, fragment):
    with pytest.raises(ProtocolError) as info:
        protocol.decode(payload, max_size=1 << 20)
    assert fragment.lower() in str(info.value).lower()
    assert info.value.header == HDR


def test_nesting_up_to_max_depth_is_accepted_and_one_more_level_is_not():
    # The event array is level 1 and args level 2, so args may hold MAX_DEPTH - 2 more levels.
    ok = _event(b"\x91" + _nested(protocol.MAX_DEPTH - 2))
    assert protocol.decode(ok)[1] == "echo"
    with pytest.raises(ProtocolError, match="nested deeper"):
        protocol.decode(_event(b"\x91" + _nested(protocol.MAX_DEPTH - 1)))


def _flat(item: bytes, size: int) -> bytes:
    n = (size - 64) // len(item)
    return _event(b"\xdd" + struct.pack(">I", n) + item * n)


@pytest.mark.parametrize("item", [b"\x90", b"\x80", b"\x91\x90", b"\xe0", b"\xd0\x80", b"\xd6\xff\0\0\0\0",
                                  b"\xd4\x05\x00"],
                         ids=["empty arrays", "empty maps", "nested pairs", "negative fixints", "int8",
                              "timestamps", "ext types"])
def test_a_message_that_would_cost_more_than_its_budget_is_refused_with_its_header(item):
    payload = _flat(item, 2 << 20)
    with pytest.raises(ProtocolError, match="bytes of memory to decode") as info:
        protocol.decode(payload, max_size=8 << 20)
    assert info.value.header == HDR


@pytest.mark.parametrize("value", [
    [{"id": i, "name": "bob", "ok": True} for i in range(100_000)],  # dense records, ~1.8 MB
    list(range(200_000)),
    [b"x" * 100] * 20_000,
    ["some text %d" % i for i in range(100_000)],
    [1.5] * 100_000,
    bytes(range(256)) * (16 << 10),  # every byte value: the pre-count of costly scalars sees ~6x
    "\u4e2d\u6587" * (1 << 20),  # CJK text, one lead byte in 0xe0-0xef per character: ~13x
], ids=["records", "ints", "bins", "strs", "floats", "bin of every byte", "CJK text"])
def test_ordinary_large_messages_stay_within_the_budget(value):
    payload = protocol.encode(HDR, "echo", [value])
    assert protocol.decode(payload, max_size=8 << 20)[2] == [value]


def test_big_str_and_bin_bodies_near_the_top_are_not_counted_as_costly_scalars():
    # A bin made only of bytes that could start a negative fixint: counted byte by byte it would be
    # refused (40x); its body is data, so only the walk's view of the message counts.
    blob = b"\xe0" * (4 << 20)
    assert protocol.decode(protocol.encode(HDR, "echo", [blob]), max_size=8 << 20)[2] == [blob]
    kwcall = protocol.encode(HDR, protocol.KWCALL, ["echo", [blob], {"note": "\u4e2d" * 100_000}])
    assert protocol.decode(kwcall, max_size=8 << 20)[2][1] == [blob]
    # The same bytes as objects are still refused, however they are wrapped.
    for wrapped in (b"\x91" * 2, b"\x92\xc0" + b"\x91", b"\x91" * 5):
        with pytest.raises(ProtocolError, match="bytes of memory to decode"):
            n = 2 << 20
            protocol.decode(_event(wrapped + b"\xdd" + struct.pack(">I", n) + b"\xe0" * n), max_size=8 << 20)


@pytest.mark.parametrize("args", [[float("inf")], [float("-inf")], [float("nan")], ["5"], [2 ** 64 - 1],
                                  [-1], [protocol.MAX_CREDIT + 1], [], None, 7, [None], [[3]], [1.5]])
def test_parse_credit_refuses_absurd_credits_with_a_protocol_error(args):
    with pytest.raises(ProtocolError, match="_zpc_more"):
        protocol.parse_credit(args)


def test_parse_credit_reads_ints_and_integral_floats():
    assert protocol.parse_credit([3]) == 3
    assert protocol.parse_credit([0]) == 0
    assert protocol.parse_credit([4.0]) == 4
    assert protocol.parse_credit([protocol.MAX_CREDIT, "extra"]) == protocol.MAX_CREDIT


def test_printable_escapes_line_breaks_controls_and_bidi_and_caps_the_length():
    forged = "x\nCRITICAL zrpc.server forged\r\x1b[31m\u202e\u2028"
    text = protocol.printable(forged)
    assert "\n" not in text and "\r" not in text and "\x1b" not in text
    assert "\u202e" not in text and "\u2028" not in text
    assert text.startswith("x\\nCRITICAL")
    assert len(protocol.printable("a" * 1000)) == 80
    assert protocol.printable("a" * 1000, limit=10) == "aaaaaaa..."
    assert protocol.printable("add") == "add"
    assert protocol.printable(b"id\n") == "b'id\\n'"


def test_printable_never_recurses_or_explodes_on_hostile_values():
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert len(protocol.printable(deep)) <= 80
    assert len(protocol.printable({"k%d" % i: [b"\n"] * 100 for i in range(1000)}, 200)) <= 200
    assert "\n" not in protocol.printable(["a\nb", {"\n": b"\r"}])
