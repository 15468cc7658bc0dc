"""Sans-IO HTTP/1.1 fast path: parse Content-Length framed messages, decline everything else.

Theory of operation
-------------------
A load generator spends most of its CPU on the HTTP cycle, and the messages it exchanges are almost
always the same shape: an HTTP/1.1 request or response, a head of a few headers ended by CRLF CRLF,
a body framed by one ``Content-Length``. For that shape this module is ~20-40x cheaper than h11.
For every other shape it does not try to be clever: it **declines**, leaving the buffer untouched, and
the caller hands the very same bytes to h11 (``loadgen.http.h11path``), which parses chunked bodies,
``Expect: 100-continue``, HTTP/1.0, read-until-close responses, obs-folded headers, bare-LF line ends
and all the error cases correctly.

The contract, checked by a differential test against h11 on valid, invalid and byte-split input:
whatever this parser accepts, h11 accepts with the same method/target/status, the same (lower-cased)
headers, the same body and the same keep-alive decision. So the rules below are deliberately narrow:

- the head must end in CRLF CRLF with CRLF line ends (a bare LF anywhere: decline);
- the start line must match h11's ABNF and say ``HTTP/1.1`` (else decline: 1.0, 0.9 and garbage go to
  h11, which either handles them or raises the precise error that becomes a 400);
- the header block is validated in one C-level pass with h11's own ``header-field`` grammar (so
  header-name case, OWS and control characters are judged exactly as h11 judges them; obs-fold and
  anything odd: decline). Load traffic sends the same headers again and again, so a block once
  accepted is remembered by its bytes (``_Blocks``, bounded): the next identical block is found,
  not validated and read again (the verdict is a function of the bytes; only accepted blocks are
  kept);
- at most one ``Content-Length`` of plain digits; none at all means an empty request body; a response
  without one (read until close) is declined;
- ``Transfer-Encoding``, ``Expect`` and ``Upgrade`` are declined; a request must have exactly one
  ``Host`` (h11 requires it and makes the error); a 1xx response is declined.

Only the limits are enforced here as errors, because they must hold whichever path parses: a head
larger than ``max_head`` (431) and a declared body larger than ``max_body`` (413) raise
``RemoteProtocolError`` with that status.

The readers are pure: bytes in (``feed``), events out (``next_request`` / ``next_response``), no
sockets and no clock.
"""

from __future__ import annotations

import re
from typing import Final

from loadgen.errors import RemoteProtocolError

__all__ = [
    "DECLINED",
    "DEFAULT_MAX_BODY",
    "DEFAULT_MAX_HEAD",
    "Declined",
    "Request",
    "RequestReader",
    "Response",
    "ResponseReader",
]

DEFAULT_MAX_HEAD: Final = 16 * 1024
DEFAULT_MAX_BODY: Final = 1024 * 1024


class Declined:
    """Sentinel type: the fast path does not handle this message; give the buffer to h11."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DECLINED"


DECLINED: Final = Declined()

# The grammar below is h11's (h11/_abnf.py, RFC 7230), so that acceptance here implies acceptance
# there. A header line is `token ":" OWS [field-content] OWS`; field-content is runs of
# field-vchar (any byte but NUL and ASCII whitespace) separated by SP/HT, so `OWS [field-content]
# OWS` is exactly "any run of bytes other than NUL, CR, LF, VT and FF", which one character class
# checks at C speed over the whole header block.
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
_HEADER_LINE = _TOKEN + rb":[^\x00\r\n\x0b\x0c]*"
_HEADER_BLOCK = _HEADER_LINE + rb"(?:\r\n" + _HEADER_LINE + rb")*"
_REQUEST_LINE = rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/1\.1"
_STATUS_LINE = rb"HTTP/1\.1 ([0-9]{3})(?: ((?:[ \t]|[^\x00\s])*))?"
# A head is its start line, then (after the first CRLF: neither grammar admits CR or LF within a
# line) its header block. Each is validated by one C-level match, the block only when it is not
# one already accepted (``_Blocks``).
_REQUEST_LINE_RE: Final = re.compile(_REQUEST_LINE)
_STATUS_LINE_RE: Final = re.compile(_STATUS_LINE)
_HEADER_BLOCK_RE: Final = re.compile(_HEADER_BLOCK)
#: Header blocks remembered by ``_Blocks`` (then forgotten all at once), and the longest one
#: remembered: 1,024 blocks of at most 2 KiB pin at most 2 MiB, whatever a peer sends.
MAX_CACHED_BLOCKS: Final = 1024
MAX_CACHED_BLOCK_BYTES: Final = 2048
_CONTENT_LENGTH_MAX_DIGITS: Final = 20  # as h11

Headers = list[tuple[bytes, bytes]]


def split_header_block(block: bytes) -> Headers:
    """(lower-case name, value) pairs of a header block validated by the fast path's grammar."""
    headers: Headers = []
    if block:
        for line in block.split(b"\r\n"):
            name, _, value = line.partition(b":")
            headers.append((name.lower(), value.strip(b" \t")))
    return headers


class _Message:
    """Headers are split lazily: the hot path rarely looks at any header but the framing ones."""

    __slots__ = ("_block", "_headers", "body", "keep_alive")

    def __init__(self, headers: Headers | bytes, body: bytes, keep_alive: bool) -> None:
        # The subclasses call this as ``_Message.__init__(self, ...)``: one is built per message
        # on the hot paths, and ``super().__init__`` costs 55 ns more (a super object per call).
        if isinstance(headers, bytes):
            self._block: bytes = headers
            self._headers: Headers | None = None
        else:
            self._block = b""
            self._headers = headers
        self.body = body
        self.keep_alive = keep_alive

    @property
    def headers(self) -> Headers:
        """(lower-case name, value) pairs in the order received."""
        if self._headers is None:
            self._headers = split_header_block(self._block)
        return self._headers

    def header(self, name: bytes) -> bytes | None:
        """The last value of the lower-case header ``name``, or None."""
        found = None
        for key, value in self.headers:
            if key == name:
                found = value
        return found


class Request(_Message):
    """A complete request: method, target, headers, body and whether the connection stays open."""

    __slots__ = ("method", "target")

    def __init__(
        self,
        method: bytes,
        target: bytes,
        headers: Headers | bytes,
        body: bytes,
        keep_alive: bool = True,
    ) -> None:
        _Message.__init__(self, headers, body, keep_alive)
        self.method = method
        self.target = target

    def __repr__(self) -> str:
        return (
            f"Request({self.method.decode()} {self.target.decode('latin-1')}, "
            f"{len(self.headers)} headers, {len(self.body)} body bytes, keep_alive={self.keep_alive})"
        )


class Response(_Message):
    """A complete response: status, reason, headers, body and whether the connection stays open."""

    __slots__ = ("reason", "status")

    def __init__(
        self,
        status: int,
        reason: bytes,
        headers: Headers | bytes,
        body: bytes,
        keep_alive: bool = True,
    ) -> None:
        _Message.__init__(self, headers, body, keep_alive)
        self.status = status
        self.reason = reason

    def __repr__(self) -> str:
        return (
            f"Response({self.status}, {len(self.headers)} headers, {len(self.body)} body bytes, "
            f"keep_alive={self.keep_alive})"
        )


class _Decline(Exception):
    """Raised inside the parser to unwind to ``next_*``, which returns DECLINED."""


class _Reader:
    """Shared buffer handling: bytes accumulate in one bytearray, complete messages are cut off it."""

    __slots__ = ("_buf", "_scan", "max_body", "max_head")

    def __init__(
        self, *, max_head: int = DEFAULT_MAX_HEAD, max_body: int = DEFAULT_MAX_BODY
    ) -> None:
        self._buf = bytearray()
        self._scan = 0  # where to resume the search for CRLF CRLF in a partial head
        self.max_head = max_head
        self.max_body = max_body

    def feed(self, data: bytes | bytearray) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet consumed by a complete message."""
        return len(self._buf)

    def take_buffer(self) -> bytes:
        """Remove and return every unconsumed byte (to hand a declined message to h11)."""
        data = bytes(self._buf)
        self._buf.clear()
        self._scan = 0
        return data

    def _find_head(self) -> int | None:
        """Index of the CRLF CRLF ending the head, or None for 'need more'."""
        buf = self._buf
        if not buf:
            return None
        if buf[0] < 0x21:
            # h11 rejects a start line beginning with a control or space byte (a leading blank
            # line included): let it say so.
            raise _Decline
        end = buf.find(b"\r\n\r\n", self._scan)
        if end >= 0:
            self._scan = 0
            if end + 4 > self.max_head:
                raise RemoteProtocolError(
                    f"header section of {end + 4} bytes exceeds the limit of {self.max_head}",
                    status=431,
                )
            return end
        if b"\n\n" in buf or b"\n\r\n" in buf:
            raise _Decline  # a head ended with bare LFs: h11's business
        if len(buf) > self.max_head:
            raise RemoteProtocolError(
                f"header section exceeds the limit of {self.max_head} bytes", status=431
            )
        self._scan = max(0, len(buf) - 3)
        return None

    def _parse_head(self, end: int, line_re: re.Pattern[bytes]) -> tuple[re.Match[bytes], _Head]:
        """Validate the head ``buf[:end]``: its start line (``line_re``) and its header block.

        A bare LF cannot slip through: neither the start-line grammar nor the header-line class
        admits LF, so a head that h11 would split differently fails to match and is declined.
        """
        buf = self._buf
        split = buf.find(b"\r\n", 0, end)
        if split < 0:
            line = line_re.fullmatch(buf, 0, end)
            if line is None:
                raise _Decline
            return line, _NO_HEADERS
        line = line_re.fullmatch(buf, 0, split)
        if line is None:
            raise _Decline
        return line, _BLOCKS.framing(bytes(buf[split + 2 : end]))

    def _body_length(self, value: bytes) -> int:
        if not value.isdigit() or len(value) > _CONTENT_LENGTH_MAX_DIGITS:
            raise _Decline  # "5, 5", signs, inner spaces: h11 normalises or rejects
        length = int(value)
        if length > self.max_body:
            raise RemoteProtocolError(
                f"body of {length} bytes exceeds the limit of {self.max_body}", status=413
            )
        return length

    def _cut_body(self, end: int, length: int) -> bytes | None:
        """Consume head and body if the whole body is buffered; else None (need more)."""
        buf = self._buf
        body_start = end + 4
        body_end = body_start + length
        if len(buf) < body_end:
            return None
        body = bytes(buf[body_start:body_end])
        del buf[:body_end]
        return body


class _Head:
    __slots__ = ("block", "close", "content_length", "hosts")

    def __init__(self, block: bytes, content_length: bytes | None, hosts: int, close: bool):
        self.block = block
        self.content_length = content_length
        self.hosts = hosts
        self.close = close


_NO_HEADERS: Final = _Head(b"", None, 0, False)


class _Blocks:
    """Header blocks already validated and read, by their bytes (pure: the grammar and
    ``_framing`` are functions of the block alone).

    Load traffic repeats its headers: a generator sends Host, Content-Type and Content-Length
    (one of a few lengths) again and again, and only the start line's target changes from
    device to device. So the header block, validated by the grammar and read by ``_framing``
    (~1.4 µs), is looked up by its bytes first (~0.2 µs). Only accepted blocks of at most
    ``MAX_CACHED_BLOCK_BYTES`` are kept; at ``MAX_CACHED_BLOCKS`` all are forgotten, so headers
    that vary (a request id per message) cost one look-up and one store more than the grammar
    alone, and a bounded dict.
    """

    __slots__ = ("_known",)

    def __init__(self) -> None:
        self._known: dict[bytes, _Head] = {}

    def __len__(self) -> int:
        return len(self._known)

    def clear(self) -> None:
        self._known.clear()

    def framing(self, block: bytes) -> _Head:
        head = self._known.get(block)
        if head is None:
            if _HEADER_BLOCK_RE.fullmatch(block) is None:
                raise _Decline
            head = _framing(block)  # raises _Decline for a block the fast path leaves to h11
            if len(block) <= MAX_CACHED_BLOCK_BYTES:
                known = self._known
                if len(known) >= MAX_CACHED_BLOCKS:
                    known.clear()
                known[block] = head
        return head


_BLOCKS: Final = _Blocks()


def _line_value(lowered: bytes, start: int) -> bytes:
    end = lowered.find(b"\r", start)
    return lowered[start : end if end >= 0 else len(lowered)].strip(b" \t")


# Headers the fast path must look at beyond Content-Length and Host; rare in load traffic, so one
# C-level search rules them all out on the common path.
_SPECIAL_RE: Final = re.compile(rb"\n(transfer-encoding|expect|upgrade|connection):")


def _framing(block: bytes) -> _Head:
    """Read the framing headers of a validated block by substring search, not a per-line loop.

    Every line of a validated block starts with a token directly followed by ":", so after
    prefixing LF, "\\n<name>:" in the lower-cased block finds exactly the lines named <name>.
    """
    lowered = b"\n" + block.lower()
    close = False
    special = _SPECIAL_RE.search(lowered)
    while special is not None:
        if special[1] != b"connection":
            raise _Decline  # chunked, 100-continue, upgrade: h11
        tokens = _line_value(lowered, special.end()).split(b",")
        close = close or any(token.strip(b" \t") == b"close" for token in tokens)
        special = _SPECIAL_RE.search(lowered, special.end())
    content_length = None
    at = lowered.find(b"\ncontent-length:")
    if at >= 0:
        if lowered.find(b"\ncontent-length:", at + 16) >= 0:
            raise _Decline  # h11 accepts equal duplicates and rejects others: its call
        content_length = _line_value(lowered, at + 16)
    return _Head(block, content_length, lowered.count(b"\nhost:"), close)


class RequestReader(_Reader):
    """Server side: bytes from a client in, complete ``Request`` events out."""

    __slots__ = ()

    def next_request(self) -> Request | Declined | None:
        """The next complete request, None when more bytes are needed, or DECLINED.

        Raises ``RemoteProtocolError`` (status 431 or 413) when a limit is exceeded.
        """
        try:
            end = self._find_head()
            if end is None:
                return None
            match, head = self._parse_head(end, _REQUEST_LINE_RE)
            if head.hosts != 1:
                raise _Decline  # h11 raises "Missing mandatory Host: header" / multiple Host
            length = 0 if head.content_length is None else self._body_length(head.content_length)
        except _Decline:
            return DECLINED
        method, target = match[1], match[2]  # before the cut: a match reads the buffer lazily
        body = self._cut_body(end, length)
        if body is None:
            return None
        return Request(method, target, head.block, body, not head.close)


class ResponseReader(_Reader):
    """Client side: bytes from a server in, complete ``Response`` events out."""

    __slots__ = ()

    def next_response(self, request_method: bytes = b"POST") -> Response | Declined | None:
        """The next complete response, None when more bytes are needed, or DECLINED.

        ``request_method`` is the method of the request this response answers: as in h11, the
        answer to a HEAD has no body whatever its Content-Length says, and a 2xx to a CONNECT opens
        a tunnel (declined).

        Raises ``RemoteProtocolError`` (status 431 or 413) when a limit is exceeded.
        """
        try:
            end = self._find_head()
            if end is None:
                return None
            match, head = self._parse_head(end, _STATUS_LINE_RE)
            status = int(match[1])
            if status < 200 or (status < 300 and request_method == b"CONNECT"):
                raise _Decline  # informational responses; a tunnel
            if status in (204, 304) or request_method == b"HEAD":
                cl = head.content_length
                if cl is not None and (not cl.isdigit() or len(cl) > _CONTENT_LENGTH_MAX_DIGITS):
                    raise _Decline  # h11 still validates the value it then ignores
                length = 0
            elif head.content_length is None:
                raise _Decline  # body delimited by the close of the connection
            else:
                length = self._body_length(head.content_length)
        except _Decline:
            return DECLINED
        reason = match[2] or b""  # before the cut: a match reads the buffer lazily
        body = self._cut_body(end, length)
        if body is None:
            return None
        return Response(status, reason, head.block, body, not head.close)
