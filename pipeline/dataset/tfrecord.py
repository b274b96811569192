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
        header = f.read(12)
        if not header:
            return
        if len(header) < 12:
            raise CorruptRecord(f"{where}: truncated record header")
        length, crc = struct.unpack("<QI", header)
        if masked_crc(header[:8]) != crc:
            raise CorruptRecord(f"{where}: bad length checksum")
        data, footer = f.read(length), f.read(4)
        if len(data) < length or len(footer) < 4 or struct.unpack("<I", footer)[0] != masked_crc(data):
            raise CorruptRecord(f"{where}: truncated or corrupt record")
        yield data
