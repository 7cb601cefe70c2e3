"""Syslog over TCP framing (RFC 6587), pure: bytes of a stream in, whole messages out.

Two framings exist, and HAProxy's ring forwarder speaks both (`server ... log-proto <proto>`):

* octet counting (`log-proto octet-count`): 'MSG-LEN SP MSG', MSG-LEN in decimal without leading
  zero, e.g. b'57 <134>Nov 26 12:18:15 haproxy[6027]: fm1 ...';
* non-transparent framing (`log-proto legacy`): each message ends with LF.

RFC 6587 lets a receiver tell them apart by the first character of a frame: a syslog message starts
with '<', a MSG-LEN with a digit 1-9. The framing is detected on the first byte of a connection and
kept, since a sender uses one framing per connection; newline framing is then split at C speed.
A malformed octet count is a `FramingError`: the stream cannot be resynchronised, so the connection
is closed by the receiver.
"""

from __future__ import annotations

_MAX_LENGTH_DIGITS = 9  # 999,999,999 bytes: far above any log message, so a bad stream fails fast


class FramingError(ValueError):
    """The stream is not valid octet-counted syslog; `messages` are those complete before the error."""

    def __init__(self, reason: str, messages: list[bytes] | None = None) -> None:
        super().__init__(reason)
        self.messages = messages or []


class SyslogStreamDecoder:
    """Feed it the bytes of one TCP connection in any chunks; it returns complete messages."""

    def __init__(self) -> None:
        self._pending = b""
        self.octet_counting: bool | None = None  # None until the first byte says

    def feed(self, chunk: bytes) -> list[bytes]:
        """The messages completed by `chunk`, without their framing. Raises FramingError."""
        data = self._pending + chunk if self._pending else chunk
        if not data:
            return []
        if self.octet_counting is None:
            self.octet_counting = data[:1].isdigit()
        if self.octet_counting:
            messages, consumed = _octet_counted(data)
        else:
            messages, consumed = _newline_framed(data)
        self._pending = data[consumed:]
        return messages

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete message kept for the next chunk."""
        return len(self._pending)


def _newline_framed(data: bytes) -> tuple[list[bytes], int]:
    """Messages up to the last LF, and how many bytes that was."""
    end = data.rfind(b"\n")
    if end < 0:
        return [], 0
    return data[:end].split(b"\n"), end + 1


def _octet_counted(data: bytes) -> tuple[list[bytes], int]:
    """The complete 'LEN SP MSG' frames at the start of `data`, and how many bytes they took."""
    messages: list[bytes] = []
    position = 0
    size = len(data)
    while position < size:
        space = data.find(b" ", position, position + _MAX_LENGTH_DIGITS + 1)
        if space < 0:
            if size - position > _MAX_LENGTH_DIGITS:
                reason = f"no message length at byte {position}: {data[position : position + 20]!r}"
                raise FramingError(reason, messages)
            break
        length_text = data[position:space]
        if not length_text.isdigit() or length_text.startswith(b"0"):
            raise FramingError(f"bad message length {length_text[:20]!r} at byte {position}", messages)
        end = space + 1 + int(length_text)
        if end > size:
            break
        messages.append(data[space + 1 : end])
        position = end
    return messages, position


def frame_octet_counted(message: bytes) -> bytes:
    """`message` framed by octet counting (for tests and benchmarks)."""
    return b"%d %s" % (len(message), message)
