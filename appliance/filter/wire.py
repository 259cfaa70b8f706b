"""DNS messages on the wire (RFC 1035, 6891, 8914): parse and build, no sockets.

`parse(data)` turns untrusted bytes into a `Message` or raises `WireError`; it never loops
forever, never recurses, and never allocates more than the packet can hold: counts are bounded
by what the remaining bytes could carry, compression pointers must point strictly backwards (so a
loop is impossible) and a name stops at 255 bytes. `build(msg)` writes a message with name
compression. The server's hot path uses `parse_query()` (the question and EDNS of a query only)
and patches cached responses in place with the offsets `parse()` records (`Message.ttl_offsets`).

Names are `str` as they appear on the wire (case preserved, labels joined by "."; a label byte
outside printable ASCII or a "." inside a label is escaped as `\\DDD`, as in zone files), without
the trailing dot; the root is "".
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field, replace

# Record types and classes we look inside or build.
A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SRV, OPT, SVCB, HTTPS, ANY = (
    1, 2, 5, 6, 12, 15, 16, 28, 33, 41, 64, 65, 255)
IN = 1
# Response codes.
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
# Header flag bits (the 16-bit word after the ID).
QR, AA, TC, RD, RA, AD, CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080, 0x0020, 0x0010
DO = 0x8000  # in the OPT record's TTL field
# EDNS options and Extended DNS Error codes (RFC 8914 §4).
OPT_EDE = 15
EDE_OTHER, EDE_BLOCKED, EDE_CENSORED, EDE_FILTERED, EDE_PROHIBITED = 0, 15, 16, 17, 18

MAX_NAME = 255  # wire bytes of a name, length octets and the root included
MAX_LABEL = 63
MAX_UDP = 512  # a client without EDNS
HEADER = 12


class WireError(ValueError):
    """The bytes are not a DNS message we accept; `str()` says what was wrong and where."""


@dataclass(frozen=True)
class Question:
    name: str
    qtype: int
    qclass: int = IN


@dataclass(frozen=True)
class Record:
    """A resource record. `rdata` is self-contained (names in CNAME/NS/PTR/MX/SOA/SRV data are
    decompressed by `parse()`), so it can be written into any other message. `target` is the
    name a CNAME, SVCB or HTTPS record points to ("" otherwise)."""

    name: str
    rtype: int
    rclass: int
    ttl: int
    rdata: bytes
    target: str = ""


@dataclass(frozen=True)
class Edns:
    """The OPT pseudo-record: the sender's UDP payload size, the DO bit and its options."""

    udp_size: int = 1232
    do: bool = False
    version: int = 0
    ext_rcode: int = 0
    options: tuple[tuple[int, bytes], ...] = ()

    def ede(self) -> tuple[int, str] | None:
        """The first Extended DNS Error option (code, text), if any."""
        for code, data in self.options:
            if code == OPT_EDE and len(data) >= 2:
                return struct.unpack("!H", data[:2])[0], data[2:].decode("utf-8", "replace")
        return None


@dataclass(frozen=True)
class Message:
    id: int
    flags: int
    questions: tuple[Question, ...] = ()
    answers: tuple[Record, ...] = ()
    authority: tuple[Record, ...] = ()
    additional: tuple[Record, ...] = ()  # without the OPT record, which is `edns`
    edns: Edns | None = None
    # Byte offsets of every TTL field (OPT excluded) in the parsed packet: the cache counts TTLs
    # down by patching these, without building the message again.
    ttl_offsets: tuple[int, ...] = field(default=(), compare=False)

    @property
    def rcode(self) -> int:
        return (self.flags & 0xF) | ((self.edns.ext_rcode << 4) if self.edns else 0)

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF


@dataclass(frozen=True)
class Query:
    """What the hot path needs of a query: its question, where the question ends, and EDNS."""

    id: int
    flags: int
    name: str
    qtype: int
    qclass: int
    key: bytes  # the question's name in wire form, lower-cased: a cache key that ignores 0x20
    question_end: int
    edns: Edns | None


# -- names -------------------------------------------------------------------------------------

# Printable ASCII but "." and "\\": a label that needs no escaping (the common case, one C call).
_PLAIN_LABEL = re.compile(rb"[!-\-/-\[\]-~]+")


def _label_text(raw: bytes) -> str:
    if _PLAIN_LABEL.fullmatch(raw):
        return raw.decode("ascii")
    return "".join(chr(b) if 33 <= b <= 126 and b not in (0x2E, 0x5C) else f"\\{b:03d}"
                   for b in raw)


def read_name(data: bytes, offset: int) -> tuple[str, int]:
    """The name at `offset` and the offset just after it (after the first pointer, if any).

    Raises WireError on a truncated name, a label type other than plain or pointer, a pointer
    that does not point before the labels it follows (loops and forward jumps), or a name over
    255 bytes."""
    labels: list[str] = []
    end = -1
    pos = offset
    # Each pointer must point before the start of the stretch it was read in: targets strictly
    # decrease, so every name ends after at most len(data) jumps (no loops).
    floor = offset
    length = 1  # the root octet
    limit = len(data)
    while True:
        if pos >= limit:
            raise WireError(f"name at {offset}: truncated")
        n = data[pos]
        if n == 0:
            pos += 1
            break
        kind = n & 0xC0
        if kind == 0xC0:
            if pos + 1 >= limit:
                raise WireError(f"name at {offset}: truncated pointer")
            target = ((n & 0x3F) << 8) | data[pos + 1]
            if end < 0:
                end = pos + 2
            if target >= floor:
                raise WireError(f"name at {offset}: compression pointer does not point back")
            pos = floor = target
            continue
        if kind:
            raise WireError(f"name at {offset}: unknown label type {kind:#x}")
        length += n + 1
        if length > MAX_NAME:
            raise WireError(f"name at {offset}: longer than {MAX_NAME} bytes")
        if pos + 1 + n > limit:
            raise WireError(f"name at {offset}: truncated label")
        labels.append(_label_text(data[pos + 1:pos + 1 + n]))
        pos += 1 + n
    return ".".join(labels), (end if end >= 0 else pos)


def _label_bytes(label: str) -> bytes:
    if "\\" not in label:
        return label.encode("ascii")
    out = bytearray()
    i = 0
    while i < len(label):
        c = label[i]
        if c == "\\" and i + 4 <= len(label) and label[i + 1:i + 4].isdigit():
            out.append(int(label[i + 1:i + 4]))
            i += 4
        elif c == "\\" and i + 1 < len(label):
            out += label[i + 1].encode("ascii")
            i += 2
        else:
            out += c.encode("ascii")
            i += 1
    return bytes(out)


def labels_of(name: str) -> list[bytes]:
    """The labels of a presentation-form name, as bytes; raises WireError if it cannot be a
    DNS name (empty label, label over 63 bytes, over 255 bytes in all, non-ASCII)."""
    name = name.rstrip(".") if name != "." else ""
    if not name:
        return []
    try:
        labels = [_label_bytes(part) for part in _split(name)]
    except (UnicodeEncodeError, ValueError):
        raise WireError(f"name {name!r}: not ASCII (use the xn-- form)") from None
    if any(not lab or len(lab) > MAX_LABEL for lab in labels):
        raise WireError(f"name {name!r}: empty label or label over {MAX_LABEL} bytes")
    if sum(len(lab) + 1 for lab in labels) + 1 > MAX_NAME:
        raise WireError(f"name {name!r}: longer than {MAX_NAME} bytes")
    return labels


def _split(name: str) -> list[str]:
    if "\\" not in name:
        return name.split(".")
    parts, cur, i = [], "", 0
    while i < len(name):
        if name[i] == "\\" and i + 1 < len(name):
            step = 4 if name[i + 1:i + 4].isdigit() else 2
            cur += name[i:i + step]
            i += step
        elif name[i] == ".":
            parts.append(cur)
            cur = ""
            i += 1
        else:
            cur += name[i]
            i += 1
    parts.append(cur)
    return parts


def name_wire(name: str) -> bytes:
    """A name in uncompressed wire form."""
    return b"".join(bytes([len(lab)]) + lab for lab in labels_of(name)) + b"\0"


class _Writer:
    """Builds a message, compressing names against every suffix written so far."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.names: dict[bytes, int] = {}

    def name(self, name: str, compress: bool = True) -> None:
        labels = labels_of(name)
        for i in range(len(labels)):
            suffix = b".".join(labels[i:]).lower()
            ptr = self.names.get(suffix) if compress else None
            if ptr is not None:
                self.buf += struct.pack("!H", 0xC000 | ptr)
                return
            if len(self.buf) < 0x3FFF:
                self.names.setdefault(suffix, len(self.buf))
            self.buf += bytes([len(labels[i])]) + labels[i]
        self.buf.append(0)


# -- parsing -----------------------------------------------------------------------------------

_NAME_RDATA = {CNAME: 1, NS: 1, PTR: 1}


def _rdata(data: bytes, rtype: int, start: int, rdlen: int) -> tuple[bytes, str]:
    """Self-contained rdata for records whose data holds names; the CNAME target."""
    end = start + rdlen
    if rtype in _NAME_RDATA:
        target, pos = read_name(data, start)
        if pos != end:
            raise WireError(f"record at {start}: rdata length does not match its name")
        return name_wire(target), (target if rtype == CNAME else "")
    if rtype == MX:
        if rdlen < 3:
            raise WireError(f"MX at {start}: too short")
        exch, pos = read_name(data, start + 2)
        if pos != end:
            raise WireError(f"MX at {start}: rdata length does not match")
        return data[start:start + 2] + name_wire(exch), ""
    if rtype == SRV:
        if rdlen < 7:
            raise WireError(f"SRV at {start}: too short")
        tgt, pos = read_name(data, start + 6)
        if pos != end:
            raise WireError(f"SRV at {start}: rdata length does not match")
        return data[start:start + 6] + name_wire(tgt), ""
    if rtype == SOA:
        mname, pos = read_name(data, start)
        rname, pos = read_name(data, pos)
        if pos + 20 != end:
            raise WireError(f"SOA at {start}: rdata length does not match")
        return name_wire(mname) + name_wire(rname) + data[pos:end], ""
    if rtype in (SVCB, HTTPS) and rdlen >= 3:
        # RFC 9460: priority, then an uncompressed TargetName ("" means the owner itself).
        tgt, _ = read_name(data, start + 2)
        return data[start:end], tgt
    return data[start:end], ""


def _edns(rec_class: int, ttl: int, rdata: bytes) -> Edns:
    options: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(rdata):
        if pos + 4 > len(rdata):
            raise WireError("OPT: truncated option header")
        code, olen = struct.unpack_from("!HH", rdata, pos)
        if pos + 4 + olen > len(rdata):
            raise WireError(f"OPT: option {code} longer than the record")
        options.append((code, rdata[pos + 4:pos + 4 + olen]))
        pos += 4 + olen
    return Edns(udp_size=max(rec_class, MAX_UDP), do=bool(ttl & DO), version=(ttl >> 16) & 0xFF,
                ext_rcode=(ttl >> 24) & 0xFF, options=tuple(options))


def parse(data: bytes) -> Message:
    """Parse a whole message; raise WireError if anything about it is malformed."""
    if len(data) < HEADER:
        raise WireError(f"message of {len(data)} bytes: shorter than a header")
    ident, flags, qd, an, ns, ar = struct.unpack_from("!6H", data)
    # A question takes at least 5 bytes, a record at least 11: counts the bytes cannot hold are
    # lies, rejected before any work.
    if qd * 5 + (an + ns + ar) * 11 > len(data) - HEADER:
        raise WireError("counts exceed what the message can hold")
    pos = HEADER
    questions = []
    for _ in range(qd):
        name, pos = read_name(data, pos)
        if pos + 4 > len(data):
            raise WireError(f"question at {pos}: truncated")
        qtype, qclass = struct.unpack_from("!HH", data, pos)
        pos += 4
        questions.append(Question(name, qtype, qclass))
    sections: list[list[Record]] = [[], [], []]
    ttls: list[int] = []
    edns: Edns | None = None
    for index, count in enumerate((an, ns, ar)):
        for _ in range(count):
            name, pos = read_name(data, pos)
            if pos + 10 > len(data):
                raise WireError(f"record at {pos}: truncated")
            rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", data, pos)
            ttl_at = pos + 4
            pos += 10
            if pos + rdlen > len(data):
                raise WireError(f"record at {pos}: rdata runs past the end")
            if rtype == OPT:
                if index != 2 or edns is not None or name:
                    raise WireError("OPT record outside the additional section, repeated or not at root")
                edns = _edns(rclass, ttl, data[pos:pos + rdlen])
            else:
                rdata, target = _rdata(data, rtype, pos, rdlen)
                sections[index].append(Record(name, rtype, rclass, ttl, rdata, target))
                ttls.append(ttl_at)
            pos += rdlen
    return Message(ident, flags, tuple(questions), tuple(sections[0]), tuple(sections[1]),
                   tuple(sections[2]), edns, tuple(ttls))


def parse_query(data: bytes) -> Query:
    """The hot path's parse of a query: header, one question, and the OPT record if present.

    Raises WireError unless it is a standard query (QR=0, opcode 0) with exactly one question and
    no answer or authority records."""
    if len(data) < HEADER + 5:
        raise WireError("shorter than a query")
    ident, flags, qd, an, ns, ar = struct.unpack_from("!6H", data)
    if flags & QR or (flags >> 11) & 0xF:
        raise WireError("not a standard query")
    if qd != 1 or an or ns or ar > 1:
        raise WireError("a query has one question and no answers")
    name, pos = read_name(data, HEADER)
    if pos + 4 > len(data):
        raise WireError("question truncated")
    qtype, qclass = struct.unpack_from("!HH", data, pos)
    end = pos + 4
    edns = None
    if ar:
        msg = parse(data)
        edns = msg.edns
        if msg.additional:
            raise WireError("a query carries no additional records but OPT")
    raw = data[HEADER:pos]
    # A plain name of n characters takes n + 2 bytes on the wire; anything shorter ended in a
    # compression pointer, which no resolver puts in a lone question (and the cache's in-place
    # reply copies the question bytes, so they must stand alone).
    if raw[-1:] != b"\0" or ("\\" not in name and len(raw) != (len(name) + 2 if name else 1)):
        raise WireError("compressed question")
    return Query(ident, flags, name, qtype, qclass, raw.lower(), end, edns)


# -- building ----------------------------------------------------------------------------------

def _record(w: _Writer, rec: Record) -> None:
    w.name(rec.name)
    w.buf += struct.pack("!HHI", rec.rtype, rec.rclass, rec.ttl & 0xFFFFFFFF)
    if rec.rtype in _NAME_RDATA or rec.rtype in (MX, SRV, SOA):
        # Our rdata is uncompressed and valid: re-read the names to compress them too.
        start = len(w.buf)
        w.buf += b"\0\0"
        raw = rec.rdata
        if rec.rtype in _NAME_RDATA:
            w.name(read_name(raw, 0)[0])
        elif rec.rtype in (MX, SRV):
            head = 2 if rec.rtype == MX else 6
            w.buf += raw[:head]
            w.name(read_name(raw, head)[0])
        else:
            mname, pos = read_name(raw, 0)
            rname, pos = read_name(raw, pos)
            w.name(mname)
            w.name(rname)
            w.buf += raw[pos:]
        struct.pack_into("!H", w.buf, start, len(w.buf) - start - 2)
    else:
        w.buf += struct.pack("!H", len(rec.rdata)) + rec.rdata


def edns_record(edns: Edns) -> bytes:
    """The OPT record of `edns`, ready to append to a message's additional section."""
    opts = b"".join(struct.pack("!HH", c, len(d)) + d for c, d in edns.options)
    ttl = (edns.ext_rcode << 24) | (edns.version << 16) | (DO if edns.do else 0)
    return b"\0" + struct.pack("!HHIH", OPT, edns.udp_size, ttl, len(opts)) + opts


def build(msg: Message) -> bytes:
    """The message in wire form, names compressed; counts are taken from the tuples."""
    w = _Writer()
    ar = len(msg.additional) + (1 if msg.edns else 0)
    w.buf += struct.pack("!6H", msg.id, msg.flags, len(msg.questions), len(msg.answers),
                         len(msg.authority), ar)
    for q in msg.questions:
        w.name(q.name)
        w.buf += struct.pack("!HH", q.qtype, q.qclass)
    for rec in (*msg.answers, *msg.authority, *msg.additional):
        _record(w, rec)
    if msg.edns:
        w.buf += edns_record(msg.edns)
    return bytes(w.buf)


def ede_option(code: int, text: str = "") -> tuple[int, bytes]:
    """An Extended DNS Error option (RFC 8914): INFO-CODE and UTF-8 EXTRA-TEXT."""
    return OPT_EDE, struct.pack("!H", code) + text.encode("utf-8")[:200]


def response(query: Query, rcode: int, answers: tuple[Record, ...] = (),
             authority: tuple[Record, ...] = (), ede: tuple[int, str] | None = None,
             aa: bool = False) -> bytes:
    """An answer to `query` built by us (blocked, rewritten, SERVFAIL): RD and CD copied, RA set,
    the question echoed with the client's own letter case, EDNS answered if the client used it
    (with `ede` as an Extended DNS Error)."""
    flags = QR | RA | (query.flags & (RD | CD)) | (AA if aa else 0) | (rcode & 0xF)
    edns = None
    if query.edns is not None:
        edns = Edns(udp_size=1232, do=query.edns.do,
                    options=(ede_option(*ede),) if ede else ())
    msg = Message(query.id, flags, (Question(query.name, query.qtype, query.qclass),),
                  answers, authority, (), edns)
    return build(msg)


def max_size(query: Query) -> int:
    """The largest UDP answer the client accepts (RFC 6891 §6.2.5: at least 512)."""
    return max(query.edns.udp_size, MAX_UDP) if query.edns else MAX_UDP


def truncated(query: Query) -> bytes:
    """An empty answer with TC set: the client retries over TCP."""
    flags = QR | RA | TC | (query.flags & (RD | CD))
    edns = Edns(udp_size=1232, do=query.edns.do) if query.edns else None
    return build(Message(query.id, flags, (Question(query.name, query.qtype, query.qclass),),
                         edns=edns))


def with_id(msg: Message, ident: int) -> Message:
    return replace(msg, id=ident)
