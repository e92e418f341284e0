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
