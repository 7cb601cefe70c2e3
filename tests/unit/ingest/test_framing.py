"""RFC 6587 framing of syslog over TCP: octet counting and LF framing, in any chunks."""

from __future__ import annotations

import pytest

from fridaymorning.ingest.framing import FramingError, SyslogStreamDecoder, frame_octet_counted

LINE = b"<134>Nov 26 12:38:53 haproxy[6027]: fm1 1795696733.462 be v1-1 200 4 9 73 -- 127.0.0.1"


@pytest.mark.parametrize(
    ("stream", "messages"),
    [
        (frame_octet_counted(LINE) + frame_octet_counted(b"<134>x y"), [LINE, b"<134>x y"]),
        (b"5 a b c", [b"a b c"]),
        (b"5 line\n", [b"line\n"]),  # a trailing LF inside the counted message is kept
        (LINE + b"\n" + LINE + b"\n", [LINE, LINE]),
        (b"<1>a\n<2>b", [b"<1>a"]),  # LF framing: the last message waits for its LF
        (b"", []),
    ],
)
def test_whole_streams_decode_to_their_messages(stream: bytes, messages: list[bytes]) -> None:
    """Both framings, told apart by the first byte of the connection (digit → octet counting)."""
    assert SyslogStreamDecoder().feed(stream) == messages


@pytest.mark.parametrize("framed", [True, False])
def test_messages_split_across_chunks_at_every_byte_are_reassembled(framed: bool) -> None:
    """However TCP cuts the stream, each message comes out once and whole."""
    frames = [frame_octet_counted(LINE) if framed else LINE + b"\n" for _ in range(3)]
    stream = b"".join(frames)
    for cut in range(1, len(stream)):
        decoder = SyslogStreamDecoder()
        out = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
        assert out == [LINE] * 3, cut
        assert decoder.pending_bytes == 0


@pytest.mark.parametrize("stream", [b"12x <134>abc", b"0 abc", b"1234567890123 a"])
def test_a_malformed_octet_count_is_a_framing_error(stream: bytes) -> None:
    """A length that is not a decimal without leading zero cannot be resynchronised: error."""
    with pytest.raises(FramingError):
        SyslogStreamDecoder().feed(stream)


def test_an_incomplete_length_waits_for_more_bytes() -> None:
    """A length cut before its space is kept, not an error."""
    decoder = SyslogStreamDecoder()
    assert decoder.feed(b"12") == []
    assert decoder.feed(b" hello world!") == [b"hello world!"]


def test_messages_before_a_framing_error_are_kept() -> None:
    """The frames complete before the bad length travel with the error, so no good line is lost."""
    with pytest.raises(FramingError) as raised:
        SyslogStreamDecoder().feed(frame_octet_counted(LINE) + b"12x oops")
    assert raised.value.messages == [LINE]
