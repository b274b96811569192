"""The TFRecord file format, written and read without TensorFlow.

Each record: uint64 length, masked crc32c of the length, the data, masked crc32c of the data
(all little-endian), as tensorflow/core/lib/io/record_writer.cc writes them.
"""
from __future__ import annotations

import struct
from typing import BinaryIO, Iterable, Iterator

import crcmod.predefined

_crc32c = crcmod.predefined.mkPredefinedCrcFun("crc-32c")   # the C extension ships with crcmod


class CorruptRecord(ValueError):
    pass


HEADER_BYTES = 12        # the length and its checksum
FOOTER_BYTES = 4         # the data's checksum


def framed_size(length: int) -> int:
    """Bytes a record of `length` bytes takes in a file."""
    return HEADER_BYTES + length + FOOTER_BYTES


def frame_length(header: bytes, where: str = "") -> int:
    """The data length a record's header announces (its checksum checked)."""
    if len(header) < HEADER_BYTES:
        raise CorruptRecord(f"{where}: truncated record header")
    length, crc = struct.unpack("<QI", header[:HEADER_BYTES])
    if masked_crc(header[:8]) != crc:
        raise CorruptRecord(f"{where}: bad length checksum")
    return length


def checked_data(body: bytes, length: int, where: str = "") -> bytes:
    """A record's data from its data and footer bytes, its checksum checked."""
    data, footer = body[:length], body[length:length + FOOTER_BYTES]
    if len(data) < length or len(footer) < 4 or struct.unpack("<I", footer)[0] != masked_crc(data):
        raise CorruptRecord(f"{where}: truncated or corrupt record")
    return data


def masked_crc(data: bytes) -> int:
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def write_records(f: BinaryIO, records: Iterable[bytes]) -> None:
    for data in records:
        length = struct.pack("<Q", len(data))
        f.write(length + struct.pack("<I", masked_crc(length)) + data
                + struct.pack("<I", masked_crc(data)))


def read_records(f: BinaryIO, where: str = "") -> Iterator[bytes]:
    while True:
        header = f.read(HEADER_BYTES)
        if not header:
            return
        length = frame_length(header, where)
        yield checked_data(f.read(length + FOOTER_BYTES), length, where)
