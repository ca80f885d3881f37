"""Turns captures, FCIP streams and hex text into decoded frame records.

A record is a plain JSON-serialisable dict (the ``--json`` output; README
lists its keys). Bad input never stops the decoder: it becomes an ``errors``
entry on the record it belongs to (or a record of kind ``error``), and the
decoder goes on with the next frame.
"""

from __future__ import annotations

import io
import re
from typing import Iterable, Iterator

from datapath.frames import capture, fc, fcip, gbe, logentry
from datapath.frames.errors import DecodeError
from datapath.frames.fc4 import decode_fc_payload, frame_kind
from datapath.frames.hop import HOP_MAGIC_BYTES
from datapath.frames.names import format_wwn
from rcn.decode.sealed import Keys, hop_layers, sealed_note, tag_offset
from rcn.decode.streams import FcipDelineator, TcpStream
from rcn.logxfer.reassembly import SegmentAssembler

DEFAULT_FCIP_PORTS = frozenset({fcip.FCIP_PORT})
DEFAULT_LOG_PORTS = frozenset({logentry.LOG_PORT})
MAX_WHOLE_INPUT = 256 << 20    # hex text and raw frames are read whole
_SNIFF = 4096
_CHUNK = 1 << 20
_HEX_NOISE = re.compile(r"#[^\n]*|0x|[\s:,]")


_WWN_FIELDS = ("target_wwn", "source_wwn")


def _plain(header) -> dict:
    """A header as output: reserved fields dropped, WWNs as text."""
    out = {k: v for k, v in header.items() if not k.startswith(("_", "reserved"))}
    for key in _WWN_FIELDS:
        if key in out:
            out[key] = format_wwn(out[key])
    return out


def _sof_name(code) -> str | None:
    return None if code is None else "SOF" + fc.Sof(code).name.lower()


def _eof_name(code) -> str | None:
    return None if code is None else "EOF" + fc.Eof(code).name.lower()


#: EOFs that say the frame's content must not be used
_BAD_EOFS = {fc.Eof.A: "aborted by the sender", fc.Eof.NI: "invalid (sent on a detected error)",
             fc.Eof.DTI: "invalid (sent on a detected error)",
             fc.Eof.RTI: "invalid (sent on a detected error)"}


def fc_layers(frame: fc.FcFrame, base: int = 0) -> dict:
    """The ``fc`` and ``fc4`` parts of a record for one decoded FC frame."""
    header = _plain(frame.header)
    header["sof"] = _sof_name(frame.sof)
    header["eof"] = _eof_name(frame.eof)
    header["crc"] = "good" if frame.crc_ok else "bad"
    out = {"kind": frame_kind(frame), "fc": header, "errors": []}
    if not frame.crc_ok:
        out["errors"].append({"layer": "fc", "field": "crc", "offset": base,
                              "reason": "FC CRC-32 mismatch"})
    if frame.eof in _BAD_EOFS:
        out["errors"].append({"layer": "fc", "field": "eof", "offset": base,
                              "reason": f"frame ended with {_eof_name(frame.eof)}: {_BAD_EOFS[frame.eof]}"})
    try:
        out["fc4"] = decode_fc_payload(frame, base)
    except DecodeError as exc:
        out["errors"].append(exc.as_dict())
    return out


class Decoder:
    """Stateful decoder: TCP reassembly spans the records of one capture. ``keys``
    (``rcn.decode.sealed.Keys``) checks hop tags and opens sealed bodies."""

    def __init__(self, fcip_ports: Iterable[int] = DEFAULT_FCIP_PORTS,
                 log_ports: Iterable[int] = DEFAULT_LOG_PORTS, keys: Keys | None = None):
        self.fcip_ports = frozenset(fcip_ports)
        self.log_ports = frozenset(log_ports)
        self.keys = keys
        self.frames = 0
        self.ignored_packets = 0
        self._streams: dict[tuple, tuple[TcpStream, FcipDelineator, dict]] = {}
        self.segments = SegmentAssembler()

    # -- entry points --------------------------------------------------
    def decode_file(self, source) -> Iterator[dict]:
        """Any supported input, recognised by its first bytes.

        ``source`` is ``bytes`` or a seekable binary file. Captures and FCIP
        streams are read as they go; hex text and single frames must fit
        :data:`MAX_WHOLE_INPUT`.
        """
        f = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
        start = f.tell()
        head = f.read(_SNIFF)
        f.seek(start)
        if capture.is_capture(head):
            yield from self.decode_capture(f)
        elif head.startswith(fcip.SYNC_PATTERN):
            yield from self.decode_fcip_stream(f)
        else:
            data = f.read(MAX_WHOLE_INPUT + 1)
            if len(data) > MAX_WHOLE_INPUT:
                yield self._error_record({}, DecodeError(
                    "input", "size", MAX_WHOLE_INPUT,
                    f"hex text or raw frames larger than {MAX_WHOLE_INPUT >> 20} MiB"))
            elif _looks_like_text(data):
                yield from self.decode_hex_text(data.decode("ascii", errors="replace"))
            else:
                yield from self.decode_bytes(data, {})
        yield from self.finish()

    def decode_capture(self, source) -> Iterator[dict]:
        """A pcap or pcapng file (``bytes`` or a seekable binary file)."""
        for item in capture.read_capture(source):
            if isinstance(item, DecodeError):
                yield self._error_record({"packet": None}, item)
                continue
            context = {"packet": item.index, "time": item.time}
            if item.linktype == capture.LINKTYPE_ETHERNET:
                yield from self._ethernet(item.data, context)
            elif item.linktype == capture.LINKTYPE_FC_2_WITH_FRAME_DELIMS:
                yield self._fc_unit(item.data, context)
            elif item.linktype == capture.LINKTYPE_FC_2:
                yield self._bare_fc(item.data, context)
            else:
                yield self._error_record(context, DecodeError(
                    "capture", "linktype", 0, f"link type {item.linktype} is not decoded"))

    def decode_fcip_stream(self, source, context: dict | None = None) -> Iterator[dict]:
        """Concatenated FCIP frames (a TCP payload stream): ``bytes`` or a binary file."""
        f = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
        delineator = FcipDelineator()
        while chunk := f.read(_CHUNK):
            for item in delineator.feed(chunk):
                yield self._fcip_item(item, dict(context or {}))
        leftover = delineator.leftover()
        if leftover:
            yield self._error_record(dict(context or {}), leftover)

    def decode_hex_text(self, text: str) -> Iterator[dict]:
        """Hex text: paragraphs separated by blank lines, each one frame or stream.

        ``#`` comments, ``0x`` prefixes, colons and commas are ignored.
        """
        for number, paragraph in enumerate(re.split(r"\n\s*\n", text), 1):
            digits = _HEX_NOISE.sub("", paragraph)
            if not digits:
                continue
            context = {"packet": number}
            try:
                data = bytes.fromhex(digits)
            except ValueError:
                bad = next((i for i, c in enumerate(digits) if c not in "0123456789abcdefABCDEF"),
                           len(digits))
                yield self._error_record(context, DecodeError(
                    "hex", "text", bad // 2, f"paragraph {number} is not hex text"))
                continue
            yield from self.decode_bytes(data, context)

    def decode_bytes(self, data: bytes, context: dict) -> Iterator[dict]:
        """One unit of unknown type, recognised by its first bytes."""
        if data.startswith(fcip.SYNC_PATTERN):
            yield from self.decode_fcip_stream(data, context)
        elif data[:4] in (logentry.MAGIC.to_bytes(4, "big"), HOP_MAGIC_BYTES):
            yield self._log(data, context)
        elif data[:2] == b"\xbc\xb5":
            yield self._fc_unit(data, context)
        elif len(data) >= gbe.ETHERNET.size + gbe.IPV4.size and \
                data[12:14] == gbe.ETHERTYPE_IPV4.to_bytes(2, "big"):
            yield from self._ethernet(data, context)
        else:
            yield self._bare_fc(data, context)

    def finish(self) -> Iterator[dict]:
        """Report the incomplete frames left in every TCP stream."""
        for stream, delineator, context in self._streams.values():
            leftover = delineator.leftover()
            if leftover:
                yield self._error_record(dict(context, packet=None), leftover)
        self._streams.clear()
        incomplete = self.segments.pending_count()
        if incomplete:
            self.segments.clear()
            yield self._error_record({"packet": None, "transport": "log"}, DecodeError(
                "log", "segment_index", 0,
                f"{incomplete} split entries incomplete at end of input"))

    def stream_stats(self) -> list[dict]:
        return [dict(context, **vars(stream.stats)) for stream, _, context in self._streams.values()]

    # -- layers --------------------------------------------------------
    def _new_record(self, context: dict, transport: str) -> dict:
        self.frames += 1
        record = {"frame": self.frames, "packet": context.get("packet"), "time": context.get("time")}
        if "src" in context:
            record["src"], record["dst"] = context["src"], context["dst"]
        record["transport"] = transport
        return record

    def _error_record(self, context: dict, error: DecodeError) -> dict:
        record = self._new_record(context, context.get("transport", "unknown"))
        record["kind"] = "error"
        record["errors"] = [error.as_dict()]
        return record

    def _ethernet(self, data: bytes, context: dict) -> Iterator[dict]:
        try:
            packet = gbe.parse_ethernet(data, fast=True)
        except DecodeError as exc:
            yield self._error_record(context, exc)
            return
        if packet is None:
            self.ignored_packets += 1
            return
        context = dict(context, src=f"{packet.src}:{packet.sport}", dst=f"{packet.dst}:{packet.dport}")
        ports = {packet.sport, packet.dport}
        if packet.proto == gbe.IPPROTO_TCP and ports & self.fcip_ports:
            yield from self._tcp(packet, context)
        elif packet.proto == gbe.IPPROTO_UDP and ports & self.log_ports:
            yield self._log(packet.payload, context, packet.payload_offset)
        else:
            self.ignored_packets += 1

    def _tcp(self, packet: gbe.Packet, context: dict) -> Iterator[dict]:
        key = (packet.src, packet.sport, packet.dst, packet.dport)
        if key not in self._streams:
            self._streams[key] = (TcpStream(), FcipDelineator(),
                                  {"src": context["src"], "dst": context["dst"], "transport": "fcip"})
        stream, delineator, _ = self._streams[key]
        data = stream.add(packet.tcp_seq, packet.payload, syn=bool(packet.tcp_flags & gbe.TCP_SYN))
        if data:
            for item in delineator.feed(data):
                yield self._fcip_item(item, context)

    def _fcip_item(self, item, context: dict) -> dict:
        if isinstance(item, DecodeError):
            return self._error_record(dict(context, transport="fcip"), item)
        offset, data = item
        record = self._new_record(context, "fcip")
        record["stream_offset"] = offset
        try:
            frame = fcip.parse_fcip_frame(data, 0, offset, fast=True)
        except DecodeError as exc:
            record["kind"] = "error"
            record["errors"] = [exc.as_dict()]
            return record
        encap = frame.encap
        record["fcip"] = {"frame_len": encap["frame_len"], "pflags": encap["pflags"],
                          "ts_seconds": encap["ts_seconds"], "ts_fraction": encap["ts_fraction"]}
        if frame.fc is None:
            record["kind"] = "fcip_special"
            record["fcip"]["special_frame"] = frame.special_body.hex()
            record["errors"] = []
            return record
        record.update(fc_layers(frame.fc, offset + fcip.HEADER_SIZE + 4))
        return record

    def _fc_unit(self, data: bytes, context: dict) -> dict:
        """LINKTYPE 225: an FC-2 frame between SOF and EOF ordered sets."""
        return self._fc_record(data, context, fc.parse_sof_eof_unit, 4)

    def _bare_fc(self, data: bytes, context: dict) -> dict:
        """LINKTYPE 224: an FC-2 frame without delimiters; its last word is the CRC."""
        return self._fc_record(data, context, fc.parse_fc_frame, 0)

    def _fc_record(self, data: bytes, context: dict, parse, header_at: int) -> dict:
        record = self._new_record(context, "fc")
        try:
            frame = parse(data, fast=True)
        except DecodeError as exc:
            record["kind"] = "error"
            record["errors"] = [exc.as_dict()]
            return record
        record.update(fc_layers(frame, header_at))
        return record

    def _log(self, data: bytes, context: dict, base: int = 0) -> dict:
        record = self._new_record(context, "log")
        if data[:4] == HOP_MAGIC_BYTES:
            record.update(hop_layers(data, base, context, self.keys, lambda inner, at:
                                     log_layers(inner, at, self.segments, self.keys)))
        else:
            record.update(log_layers(data, base, self.segments, self.keys))
        return record


def log_layers(data: bytes, base: int = 0, segments: SegmentAssembler | None = None,
               keys: Keys | None = None) -> dict:
    """The ``log`` part of a record: the entry, its FC units, NAK ranges or batch.

    With ``segments``, the segment that completes a split entry carries the
    units of the whole reassembled RIO area (offsets count from its start).
    A body sealed end to end is opened with ``keys`` (``rcn.decode.sealed``), or
    shown as sealed.
    """
    out: dict = {"errors": []}
    try:
        entry = logentry.parse_datagram(data, base, fast=True)
    except DecodeError as exc:
        out["kind"] = "error"
        out["errors"].append(exc.as_dict())
        return out
    header = _plain(entry.header._asdict())
    entry_type = logentry.EntryType(entry.header.entry_type)
    header["entry_type_name"] = entry_type.name
    header["crc32c"] = "good" if entry.crc_ok else "bad"
    out["kind"] = "log_" + entry_type.name.lower()
    out["log"] = header
    payload_base = base + logentry.LOG_HEADER.size
    if not entry.crc_ok:
        out["errors"].append({"layer": "log", "field": "crc32c",
                              "offset": base + logentry.LOG_HEADER.offsets["crc32c"],
                              "reason": "CRC32C mismatch"})
    try:
        if entry.header.seal != logentry.Seal.CLEAR:
            _sealed_body(out, entry, base, segments, keys)
        elif entry_type == logentry.EntryType.NAK:
            out["nak_ranges"] = [list(r) for r in logentry.parse_nak_ranges(entry.payload, payload_base)]
        elif entry_type == logentry.EntryType.KEEPALIVE:
            out["keepalive"] = _plain(logentry.parse_keepalive(entry.payload, payload_base))
        elif entry_type == logentry.EntryType.BATCH:
            _, spans = logentry.parse_batch(data, base)
            out["entries"] = [log_layers(data[start - base:start - base + length], start,
                                         segments, keys)
                              for start, length in spans]
        elif entry_type in logentry.RIO_TYPES:
            _rio_units(out, entry, base, segments)
    except DecodeError as exc:
        out["errors"].append(exc.as_dict())
    return out


def _whole_body(out: dict, entry: logentry.LogEntry, base: int,
                segments: SegmentAssembler | None) -> bytes | None:
    """The body of an unsegmented entry, or of a split one once its last segment is in."""
    header = entry.header
    if header.segment_count == 1:
        return entry.payload
    if segments is None or not entry.crc_ok:
        return None
    area = segments.add(header, entry.payload, base + logentry.LOG_HEADER.offsets["segment_offset"])
    if area is not None:
        out["reassembled"] = {"segments": header.segment_count, "total_length": len(area)}
    return area


def _rio_units(out: dict, entry: logentry.LogEntry, base: int,
               segments: SegmentAssembler | None) -> None:
    """Units of an unsegmented entry, or of a split one once its last segment is in."""
    area = _whole_body(out, entry, base, segments)
    if area:
        at = base + logentry.HEADER_SIZE if entry.header.segment_count == 1 else 0
        out["units"] = _units(area, at, out["errors"])


def _sealed_body(out: dict, entry: logentry.LogEntry, base: int,
                 segments: SegmentAssembler | None, keys: Keys | None) -> None:
    """A body sealed end to end: shown as sealed, or opened with ``keys`` and decoded
    (offsets from the start of the opened body)."""
    header = entry.header
    entry_type = logentry.EntryType(header.entry_type)
    seal_at = base + logentry.LOG_HEADER.offsets["seal"]
    if header.seal != logentry.Seal.AES_256_GCM:
        raise DecodeError("log", "seal", seal_at, f"unknown seal {header.seal}")
    if entry_type not in logentry.SEALABLE_TYPES:
        raise DecodeError("log", "seal", seal_at, f"a {entry_type.name} is never sealed end to end")
    out["seal"] = sealed_note(header)
    if keys is None:
        return
    body = _whole_body(out, entry, base, segments)
    if body is None:
        return
    clear = keys.open_body(header, body, out, tag_offset(base, body, header.segment_count > 1))
    if clear is None:
        return
    if entry_type == logentry.EntryType.NAK:
        out["nak_ranges"] = [list(r) for r in logentry.parse_nak_ranges(clear, 0)]
    elif clear:
        out["units"] = _units(clear, 0, out["errors"])


def _units(area: bytes, base: int, errors: list) -> list[dict]:
    units = []
    for start, length in logentry.split_rio_area(area, base):
        rel = start - base
        try:
            frame = fc.parse_sof_eof_unit(area, rel, rel + length, base, fast=True)
        except DecodeError as exc:
            errors.append(exc.as_dict())
            continue
        unit = fc_layers(frame, start + 4)
        errors.extend(unit.pop("errors"))
        units.append(unit)
    return units


def _looks_like_text(data: bytes) -> bool:
    head = data[:4096]
    return bool(head) and all(b in b"0123456789abcdefABCDEFxX#:,\t\r\n " or 32 <= b < 127
                              for b in head) and re.search(rb"[0-9a-fA-F]{2}", head) is not None
