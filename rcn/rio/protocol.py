"""The FCIP link: bytes in, FC frames out (and back), plus the two factories.

:class:`FcipProtocol` is thin. Inbound, every TCP chunk goes through the
delineation kernel (:class:`datapath.kernels.delineate.StreamDelineator`);
for each complete frame it checks the FC CRC (``crc_errors``: counted,
logged, dropped) and the EOF (EOFa, EOFni, EOFdti, EOFrti: ``eof_errors``,
dropped), and hands the frame to its endpoint as a
:class:`datapath.frames.fc.FcFrame` (FC header dict from the kernel's record,
payload without fill bytes, SOF and EOF codes) -- or, for FCP_DATA from an
originator, first offers it to the endpoint's ``data_frame`` fast path (a task
waiting for write data takes the payload without a dict or frame object). FCIP special frames are
counted and ignored. A delineation error (bad complement, length or
delimiter word) loses the framing for good: the reason is logged and counted
(``stream_errors``), the endpoint is told ``link_down(reason)`` and the
connection is closed.

Outbound, :meth:`FcipProtocol.send_frame` (header dict) and the positional
:meth:`FcipProtocol.send_fc` (the exchange layer's hot path) build exactly
``fcip.encapsulate(fc.build_fc_frame(header, payload), sof, eof)`` (the tests
hold them to it) from a precomputed FCIP header per frame length and
``fc.fc_frame_parts`` (one pack of the FC header table's words), and write each FCIP frame with one
``transport.write`` -- except :meth:`FcipProtocol.send_fc_many`, which writes a
data sequence's frames with one ``writeSequence`` (Twisted's per-write cost is
larger than a 2 KiB frame's encoding); TCP_NODELAY is set on the socket.

An endpoint (:class:`rcn.rio.port.FcEndpoint`: the edge's
:class:`~rcn.rio.fabric.FabricPort`, the array's
:class:`~rcn.rio.array.ArrayPort`) gets ``link_up(protocol)``,
``frame_received(frame)`` and ``link_down(reason)`` once.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import replace

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from datapath.frames import fcip
from datapath.frames.fc import (FC_CRC, FC_CRC_SIZE, FC_HEADER, FC_HEADER_SIZE, Eof, FcFrame,
                                FcType, FCtl, RCtl, Sof, delimiter_word, fc_frame_parts)
from datapath.frames.names import format_port_id
from datapath.kernels.delineate import StreamDelineator
from rcn.rio.array import ArrayConfig, ArrayPort
from rcn.rio.errors import LinkDown
from rcn.rio.fabric import FabricConfig, FabricPort

_R_DATA = int(RCtl.FCP_DATA)
_TYPE_FCP = int(FcType.FCP)
_EXCHANGE_CONTEXT = int(FCtl.EXCHANGE_CONTEXT)
_SOF_WORDS = {int(code): delimiter_word(code) for code in Sof}
_EOF_WORDS = {int(code): delimiter_word(code) for code in Eof}
_FCIP_HEADERS: dict[int, bytes] = {}          # frame length in words (15..545) -> FCIP header
_FC_OFFSET = fcip.HEADER_SIZE + 4              # FC header after the FCIP header and SOF word
_TRAILER = FC_CRC_SIZE + 4                     # FC CRC and EOF word
_FRAME_OVERHEAD = fcip.OVERHEAD + FC_HEADER_SIZE + FC_CRC_SIZE   # FCIP, SOF, FC header, CRC, EOF
#: the 3-byte fields (D_ID, S_ID, F_CTL): packed into a word with a 1-byte field, so the
#: pack cannot check their range
_FIELD_BITS = {f.name: 8 * f.width for f in FC_HEADER.fields if f.width == 3}

#: EOFs whose frame content must not be used (as rcn-decode treats them)
BAD_EOFS = frozenset(int(code) for code in (Eof.A, Eof.NI, Eof.DTI, Eof.RTI))


def _fcip_header(words: int) -> bytes:
    header = _FCIP_HEADERS.get(words)
    if header is None:
        # built once per length by the reference encoder
        header = fcip.encapsulate(bytes(words * 4 - fcip.OVERHEAD))[:fcip.HEADER_SIZE]
        _FCIP_HEADERS[words] = header
    return header


def encode_frame(r_ctl: int, d_id: int, s_id: int, fc_type: int, f_ctl: int, seq_id: int,
                 seq_cnt: int, ox_id: int, rx_id: int, parameter: int, payload=b"",
                 sof: int = Sof.I3, eof: int = Eof.T, cs_ctl: int = 0, df_ctl: int = 0) -> bytes:
    """One FCIP frame (``fc.fc_frame_parts`` between the FCIP header and delimiters)."""
    header, pad, crc = fc_frame_parts(r_ctl, d_id, s_id, fc_type, f_ctl, seq_id, seq_cnt, ox_id,
                                      rx_id, parameter, payload, cs_ctl, df_ctl)
    return b"".join((_fcip_header((_FRAME_OVERHEAD + len(payload) + len(pad)) >> 2),
                     _SOF_WORDS[sof], header, payload, pad, crc, _EOF_WORDS[eof]))


def encode_frame_dict(header: dict, payload=b"", sof: int = Sof.I3, eof: int = Eof.T) -> bytes:
    """:func:`encode_frame` from a header dict (missing fields 0, RX_ID 0xFFFF)."""
    unknown = header.keys() - FC_HEADER.by_name.keys()
    if unknown:
        raise KeyError(f"fc: unknown header fields {sorted(unknown)}")
    v = dict.fromkeys(FC_HEADER.by_name, 0)
    v["rx_id"] = 0xFFFF
    v.update((name, int(value)) for name, value in header.items())
    for name, bits in _FIELD_BITS.items():
        if not 0 <= v[name] < 1 << bits:
            raise ValueError(f"fc: {name} 0x{v[name]:x} does not fit {bits} bits")
    try:
        return encode_frame(v["r_ctl"], v["d_id"], v["s_id"], v["type"], v["f_ctl"], v["seq_id"],
                            v["seq_cnt"], v["ox_id"], v["rx_id"], v["parameter"], payload, sof,
                            eof, cs_ctl=v["cs_ctl"], df_ctl=v["df_ctl"])
    except struct.error as exc:
        raise ValueError(f"fc: cannot build header {header}: {exc}") from None


class FcipProtocol(Protocol):
    """One FCIP connection (see the module doc). ``frame_tap(protocol, frame)`` sees each
    FCIP frame as it is written (captures)."""

    _log = Logger()

    def __init__(self, endpoint, frame_tap=None):
        self.endpoint = endpoint
        self.frame_tap = frame_tap
        self._delineator = StreamDelineator()
        self._down: str | None = "not connected yet"
        self.frames_in = self.frames_out = self.bytes_in = self.bytes_out = 0
        self.crc_errors = self.eof_errors = self.stream_errors = 0
        self.special_frames = self.handler_errors = 0

    @property
    def counters(self) -> dict:
        return {"frames_in": self.frames_in, "frames_out": self.frames_out,
                "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
                "crc_errors": self.crc_errors, "eof_errors": self.eof_errors,
                "stream_errors": self.stream_errors, "special_frames": self.special_frames,
                "handler_errors": self.handler_errors}

    @property
    def connected_link(self) -> bool:
        return self._down is None

    def _peer(self) -> str:
        try:
            peer = self.transport.getPeer()
        except Exception:
            return "?"
        host, port = getattr(peer, "host", None), getattr(peer, "port", None)
        return f"{host}:{port}" if host is not None else str(peer)

    # -- connection events -----------------------------------------------------------
    def connectionMade(self):
        set_nodelay = getattr(self.transport, "setTcpNoDelay", None)
        if set_nodelay is not None:
            set_nodelay(True)
        self._down = None
        self.endpoint.link_up(self)

    def connectionLost(self, reason=None):
        if self._down is None:
            self._down = reason.getErrorMessage() if reason is not None else "connection lost"
            self.endpoint.link_down(self._down)

    def close(self, reason: str) -> None:
        """Drop the connection on purpose; the endpoint hears ``link_down(reason)``."""
        if self._down is None:
            self._down = reason
            self.endpoint.link_down(reason)
        if self.transport is not None:
            self.transport.loseConnection()

    # -- inbound ---------------------------------------------------------------------
    def dataReceived(self, data):
        if self._down is not None:
            return
        self.bytes_in += len(data)
        block, result = self._delineator.feed(data)
        if len(result.frames):
            self._deliver(block, result.frames.tolist())
        if result.error and self._down is None:
            self.stream_errors += 1
            reason = (f"FCIP stream from {self._peer()}: {result.error.name} at stream offset "
                      f"{result.error_offset}; framing is lost, closing the connection")
            self._log.warn("{reason}", reason=reason)
            self.close(reason)

    def _deliver(self, block, records) -> None:
        view = memoryview(block)
        data_frame = getattr(self.endpoint, "data_frame", None)
        crc32 = zlib.crc32
        unpack_crc = FC_CRC.unpack_from
        for (offset, length, r_ctl, d_id, cs_ctl, s_id, fc_type, f_ctl, seq_id, df_ctl, seq_cnt,
             ox_id, rx_id, parameter, sof, eof, special) in records:
            if special:
                self.special_frames += 1
                self._log.info("FCIP special frame from {peer} ignored", peer=self._peer())
                continue
            start = offset + _FC_OFFSET
            crc_at = offset + length - _TRAILER
            if crc32(view[start:crc_at]) != unpack_crc(block, crc_at)[0]:
                self.crc_errors += 1
                self._log.warn("FC CRC error in a frame from {peer} (R_CTL 0x{r_ctl:02x} "
                               "{s_id} -> {d_id}, OX_ID 0x{ox_id:04x}); frame dropped",
                               peer=self._peer(), r_ctl=r_ctl, s_id=format_port_id(s_id),
                               d_id=format_port_id(d_id), ox_id=ox_id)
                continue
            if eof in BAD_EOFS:
                self.eof_errors += 1
                self._log.warn("frame from {peer} ended with EOF 0x{eof:02x} (R_CTL 0x{r_ctl:02x},"
                               " OX_ID 0x{ox_id:04x}); frame dropped", peer=self._peer(), eof=eof,
                               r_ctl=r_ctl, ox_id=ox_id)
                continue
            payload_end = crc_at - (f_ctl & 3)
            payload_start = start + FC_HEADER_SIZE
            payload = bytes(view[payload_start:payload_end]) if payload_end > payload_start else b""
            self.frames_in += 1
            try:
                # write data to a task waiting for it (most frames of a write) takes the
                # endpoint's fast path, without a header dict or a frame object
                if not (r_ctl == _R_DATA and fc_type == _TYPE_FCP
                        and not f_ctl & _EXCHANGE_CONTEXT and data_frame is not None
                        and data_frame(s_id, ox_id, parameter, payload, f_ctl)):
                    header = {"r_ctl": r_ctl, "d_id": d_id, "cs_ctl": cs_ctl, "s_id": s_id,
                              "type": fc_type, "f_ctl": f_ctl, "seq_id": seq_id,
                              "df_ctl": df_ctl, "seq_cnt": seq_cnt, "ox_id": ox_id,
                              "rx_id": rx_id, "parameter": parameter}
                    self.endpoint.frame_received(FcFrame(header, payload, True, sof, eof))
            except Exception:
                self.handler_errors += 1
                self._log.failure("handling a frame from {peer} (R_CTL 0x{r_ctl:02x}, OX_ID "
                                  "0x{ox_id:04x}) failed; frame dropped", peer=self._peer(),
                                  r_ctl=r_ctl, ox_id=ox_id)
            if self._down is not None:
                return

    # -- outbound --------------------------------------------------------------------
    def send_fc(self, r_ctl, d_id, s_id, fc_type, f_ctl, seq_id, seq_cnt, ox_id, rx_id,
                parameter, payload, sof, eof) -> None:
        """Send one FC frame (positional header fields); raises LinkDown when down."""
        if self._down is not None:
            raise LinkDown(self._down)
        self._write(encode_frame(r_ctl, d_id, s_id, fc_type, f_ctl, seq_id, seq_cnt, ox_id,
                                 rx_id, parameter, payload, sof, eof))

    def send_fc_many(self, frames: list[tuple]) -> None:
        """Send several FC frames (``send_fc``'s arguments each) with one transport write."""
        if self._down is not None:
            raise LinkDown(self._down)
        encoded = [encode_frame(*frame) for frame in frames]
        self.frames_out += len(encoded)
        self.bytes_out += sum(map(len, encoded))
        if self.frame_tap is not None:
            for frame in encoded:
                self.frame_tap(self, frame)
        self.transport.writeSequence(encoded)

    def send_frame(self, header: dict, payload=b"", sof: int = Sof.I3, eof: int = Eof.T) -> None:
        """Send one FC frame given as a header dict (fields as ``fc.FC_HEADER`` names them)."""
        if self._down is not None:
            raise LinkDown(self._down)
        self._write(encode_frame_dict(header, payload, sof, eof))

    def _write(self, frame: bytes) -> None:
        self.frames_out += 1
        self.bytes_out += len(frame)
        if self.frame_tap is not None:
            self.frame_tap(self, frame)
        self.transport.write(frame)


class FcipServerFactory(Factory):
    """The edge side: one :class:`FabricPort` per accepted connection.

    At most ``config.max_links`` links at a time (a connection beyond that is
    refused, logged); link ``n`` (the lowest free number) assigns its array
    the N_Port ID ``config.array_id_base + n``.
    """

    _log = Logger()

    def __init__(self, clock, config: FabricConfig, frame_tap=None):
        self.clock = clock
        self.config = config
        self.frame_tap = frame_tap
        self.ports: dict[int, FabricPort] = {}
        self.refused = 0

    def reconfigure(self, virtual_storages, access) -> None:
        """Tables 404 and 405 changed: new links use them, live links are updated."""
        self.config = replace(self.config, virtual_storages=list(virtual_storages),
                              access=access)
        for port in self.ports.values():
            port.reconfigure(self.config)

    def buildProtocol(self, addr):
        index = next((n for n in range(self.config.max_links) if n not in self.ports), None)
        if index is None:
            self.refused += 1
            self._log.warn("FCIP connection from {addr} refused: {limit} links already up "
                           "(max_links)", addr=addr, limit=self.config.max_links)
            return None
        port = FabricPort(self.clock, self.config, index)
        port.on_link_down = lambda reason, index=index: self.ports.pop(index, None)
        self.ports[index] = port
        protocol = FcipProtocol(port, self.frame_tap)
        protocol.factory = self
        return protocol


    def recheck_access(self) -> int:
        """Apply a changed ``config.access`` on every link (see FabricPort.recheck_access)."""
        return sum(port.recheck_access() for port in list(self.ports.values()))


class FcipClientFactory(Factory):
    """The array side: an :class:`ArrayPort` for the connection (``self.port``, the last one)."""

    def __init__(self, clock, config: ArrayConfig, frame_tap=None):
        self.clock = clock
        self.config = config
        self.frame_tap = frame_tap
        self.port: ArrayPort | None = None

    def buildProtocol(self, addr):
        self.port = ArrayPort(self.clock, self.config)
        protocol = FcipProtocol(self.port, self.frame_tap)
        protocol.factory = self
        return protocol
