"""pcap and pcapng capture files (the containers come from dpkt).

``CaptureWriter`` writes either format with one link type. ``read_capture``
reads bytes or a file as it goes and yields :class:`Record` for each packet and :class:`DecodeError` (layer
``capture``) for a damaged or truncated part, with the file offset, so a
reader reports it and goes on with what it can still read.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Iterator

import dpkt

from datapath.frames.errors import DecodeError

LINKTYPE_ETHERNET = 1
LINKTYPE_FC_2 = 224
LINKTYPE_FC_2_WITH_FRAME_DELIMS = 225

PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",
               b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
_PCAP_GLOBAL_HEADER = 24
_PCAP_RECORD_HEADER = 16


@dataclass
class Record:
    index: int          # 1-based, as tshark numbers frames
    time: float         # seconds since the epoch
    linktype: int
    data: bytes


class CaptureWriter:
    """Write packets to a pcap (default) or pcapng file object."""

    def __init__(self, fileobj, linktype: int = LINKTYPE_ETHERNET, pcapng: bool = False,
                 snaplen: int = 65535):
        self.linktype = linktype
        if pcapng:
            self._writer = dpkt.pcapng.Writer(fileobj, snaplen=snaplen, linktype=linktype)
        else:
            self._writer = dpkt.pcap.Writer(fileobj, snaplen=snaplen, linktype=linktype, nano=True)

    def write(self, data: bytes, time: float) -> None:
        self._writer.writepkt(data, ts=time)

    def close(self) -> None:
        self._writer.close()


def is_capture(head: bytes) -> bool:
    return head[:4] in PCAP_MAGICS or head[:4] == PCAPNG_MAGIC


def read_capture(source) -> Iterator[Record | DecodeError]:
    """Records of a capture: ``bytes`` or a seekable binary file, read as it goes.

    Errors are yielded, not raised; memory stays bounded by the largest record.
    """
    f = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    start = f.tell()
    size = f.seek(0, io.SEEK_END) - start
    f.seek(start)
    magic = f.read(4)
    f.seek(start)
    if magic == PCAPNG_MAGIC:
        yield from _read_pcapng(f, start, size)
    elif magic in PCAP_MAGICS:
        yield from _read_pcap(f, start, size, PCAP_MAGICS[magic])
    else:
        yield DecodeError("capture", "magic", 0, f"not a pcap or pcapng file (starts {magic.hex()})")


def _peek(f, at: int, count: int) -> bytes:
    """``count`` bytes at absolute position ``at``, leaving the position alone."""
    here = f.tell()
    f.seek(at)
    data = f.read(count)
    f.seek(here)
    return data


def _read_pcap(f, start: int, size: int, endian: str) -> Iterator[Record | DecodeError]:
    if size < _PCAP_GLOBAL_HEADER:
        yield DecodeError("capture", "global_header", 0, f"truncated: {size} bytes")
        return
    reader = dpkt.pcap.Reader(f)
    linktype = reader.datalink()
    order = "little" if endian == "<" else "big"
    index = 0
    packets = iter(reader)
    while True:
        pos = f.tell() - start
        try:
            ts, buf = next(packets)
        except StopIteration:
            return
        except (dpkt.NeedData, dpkt.UnpackError):
            yield DecodeError("capture", "record_header", pos,
                              f"truncated record header: {size - pos} bytes left")
            return
        index += 1
        caplen = int.from_bytes(_peek(f, start + pos + 8, 4), order)
        if len(buf) < caplen:
            yield DecodeError("capture", "record", pos,
                              f"record {index} truncated: {len(buf)} of {caplen} bytes")
            return
        yield Record(index, float(ts), linktype, bytes(buf))


def _read_pcapng(f, start: int, size: int) -> Iterator[Record | DecodeError]:
    try:
        reader = dpkt.pcapng.Reader(f)
    except (ValueError, dpkt.NeedData, dpkt.UnpackError) as exc:
        yield DecodeError("capture", "section_header", 0, f"bad pcapng header: {exc}")
        return
    linktype = reader.datalink()
    order = "little" if _peek(f, start + 8, 4) == b"\x4d\x3c\x2b\x1a" else "big"
    index = 0
    packets = iter(reader)
    while True:
        pos = f.tell() - start
        try:
            ts, buf = next(packets)
        except StopIteration:
            # dpkt stops without a word at a tail too short for a block header
            # and skips a cut-off block it does not decode: walk what is left
            while pos < size:
                length = int.from_bytes(_peek(f, start + pos + 4, 4), order) \
                    if size - pos >= 8 else 0
                if length < 12 or pos + length > size:
                    yield DecodeError("capture", "block", pos,
                                      f"truncated block: {size - pos} bytes left")
                    return
                pos += length
            return
        except (dpkt.NeedData, dpkt.UnpackError, ValueError, OverflowError) as exc:
            yield DecodeError("capture", "block", pos, f"damaged or truncated block: {exc}")
            return
        index += 1
        yield Record(index, float(ts), linktype, bytes(buf))
