"""What an encoded image's first bytes say, read with TensorFlow string ops (no decoding, so it
runs inside a SavedModel's signature and a tf.data map): its height and width, and a JPEG's EXIF
orientation; and the orientation applied to decoded pixels.

TensorFlow's decoders ignore EXIF orientation (TensorFlow issues 8430, 33932, 49834), so a phone
photo taken upright decodes sideways; and they allocate whatever a header claims, so a 389 KB
20000x20000 PNG costs gigabytes before anyone can refuse it (issue 26). Reading the header first
answers both. The parsing follows the formats' specifications as Pillow reads them (the
ingestion job's orientation comes from Pillow, pipeline/images.py): the first APP1 segment that
starts with "Exif\\0\\0", its TIFF byte order, IFD0's tag 0x0112; a JPEG's size from its first
SOF segment; a PNG's from IHDR, a GIF's from its screen descriptor, a BMP's from its info header.
Every read is bounded (a segment walk of at most MAX_SEGMENTS, at most MAX_ENTRIES IFD entries),
and bytes past the end read as 0, so hostile bytes give a wrong answer at worst, never a hang."""
from __future__ import annotations

import tensorflow as tf

__all__ = ["exif_orientation", "image_size", "size_error", "upright"]

MAX_SEGMENTS = 256           # JPEG segments walked before the frame header (APPn, ICC chunks, ...)
MAX_ENTRIES = 64             # IFD0 entries searched for the orientation tag
ORIENTATION_TAG = 0x0112
# SOF markers (frame headers): C0-CF except DHT (C4), JPG (C8) and DAC (CC).
SOF = [m for m in range(0xC0, 0xD0) if m not in (0xC4, 0xC8, 0xCC)]


def _read(encoded, size, pos, count: int):
    """`count` bytes from `pos` as int64 (0 past the end or before the start)."""
    pos = tf.cast(pos, tf.int64)
    start = tf.clip_by_value(pos, 0, size)
    raw = tf.cast(tf.io.decode_raw(tf.strings.substr(encoded, start, count), tf.uint8), tf.int64)
    raw = tf.ensure_shape(tf.pad(raw, [[0, count - tf.shape(raw)[0]]]), (count,))
    return tf.where(tf.equal(start, pos), raw, tf.zeros_like(raw))


def _number(raw, little_endian):
    """Unsigned integers from bytes (int64, along the last axis) in the given byte order."""
    weights = tf.constant([256 ** k for k in range(raw.shape[-1])], tf.int64)
    return tf.where(little_endian, tf.reduce_sum(raw * weights, -1), tf.reduce_sum(raw * weights[::-1], -1))


def _jpeg_segments(encoded, size):
    """(offset of the first SOF segment, offset of the TIFF header in the first Exif APP1), -1
    for what is not found before the scan starts."""
    def walking(pos, steps, sof, exif):
        return (steps < MAX_SEGMENTS) & (sof < 0) & (pos + 4 <= size)

    def step(pos, steps, sof, exif):
        b = _read(encoded, size, pos, 10)
        marker, kind = tf.equal(b[0], 0xFF), b[1]
        is_exif = marker & tf.equal(kind, 0xE1) & (exif < 0) & tf.reduce_all(
            tf.equal(b[4:10], tf.constant(list(b"Exif\0\0"), tf.int64)))
        exif = tf.where(is_exif, pos + 10, exif)
        sof = tf.where(marker & tf.reduce_any(tf.equal(kind, SOF)), pos, sof)
        standalone = tf.equal(kind, 0x01) | ((kind >= 0xD0) & (kind <= 0xD7))    # no length field
        one, two = tf.constant(1, tf.int64), tf.constant(2, tf.int64)
        advance = tf.where(tf.equal(kind, 0xFF), one, tf.where(standalone, two, 2 + b[2] * 256 + b[3]))
        stop = ~marker | tf.equal(kind, 0xDA) | tf.equal(kind, 0xD9)            # scan or end
        return tf.where(stop, size, pos + advance), steps + 1, sof, exif

    minus = tf.constant(-1, tf.int64)
    _, _, sof, exif = tf.while_loop(walking, step, (tf.constant(2, tf.int64), tf.constant(0), minus, minus))
    return sof, exif


def _is_jpeg(head):
    return tf.equal(head[0], 0xFF) & tf.equal(head[1], 0xD8)


def exif_orientation(encoded: tf.Tensor) -> tf.Tensor:
    """A JPEG's EXIF orientation (int64, 1-8); 1 for other formats, no EXIF, or a value outside 1-8."""
    size = tf.cast(tf.strings.length(encoded), tf.int64)

    def from_exif():
        _, tiff = _jpeg_segments(encoded, size)
        header = _read(encoded, size, tiff, 8)
        little = tf.equal(header[0], 0x49)                      # "II"; "MM" is big-endian
        ifd = tiff + _number(header[4:8], little)
        count = _number(_read(encoded, size, ifd, 2), little)
        entries = tf.reshape(_read(encoded, size, ifd + 2, 12 * MAX_ENTRIES), (MAX_ENTRIES, 12))
        tags, values = _number(entries[:, 0:2], little), _number(entries[:, 8:10], little)
        found = (tf.range(MAX_ENTRIES, dtype=tf.int64) < count) & tf.equal(tags, ORIENTATION_TAG)
        first = found & tf.equal(tf.cumsum(tf.cast(found, tf.int64)), 1)
        value = tf.reduce_sum(tf.where(first, values, tf.zeros_like(values)))
        one = tf.constant(1, tf.int64)
        value = tf.where((tiff >= 0) & tf.reduce_any(found), value, one)
        return tf.where((value >= 1) & (value <= 8), value, one)

    return tf.cond(_is_jpeg(_read(encoded, size, 0, 2)), from_exif, lambda: tf.constant(1, tf.int64))


def image_size(encoded: tf.Tensor) -> tf.Tensor:
    """[height, width] (int64) that the header of a PNG, JPEG, GIF or BMP declares, as stored;
    [0, 0] when the bytes start as none of them."""
    size = tf.cast(tf.strings.length(encoded), tf.int64)
    head = _read(encoded, size, 0, 26)
    be, le = tf.constant(False), tf.constant(True)

    def jpeg():
        sof, _ = _jpeg_segments(encoded, size)
        frame = _read(encoded, size, sof, 9)
        return tf.where(sof >= 0, tf.stack([_number(frame[5:7], be), _number(frame[7:9], be)]),
                        tf.zeros(2, tf.int64))

    png = tf.reduce_all(tf.equal(head[:8], list(b"\x89PNG\r\n\x1a\n")))
    gif = tf.reduce_all(tf.equal(head[:4], list(b"GIF8")))
    bmp = tf.reduce_all(tf.equal(head[:2], list(b"BM")))
    height_bmp = _number(head[22:26], le)
    return tf.case([
        (_is_jpeg(head), jpeg),
        (png, lambda: tf.stack([_number(head[20:24], be), _number(head[16:20], be)])),
        (gif, lambda: tf.stack([_number(head[8:10], le), _number(head[6:8], le)])),
        (bmp, lambda: tf.stack([tf.where(height_bmp >= 2**31, 2**32 - height_bmp, height_bmp),
                                _number(head[18:22], le)]))],
        default=lambda: tf.zeros(2, tf.int64), exclusive=False)


def size_error(encoded: tf.Tensor, max_pixels: int) -> tf.Tensor:
    """Why these bytes must not be decoded (a scalar string), or "" when they may be: more pixels
    than `max_pixels` by their header, or no PNG/JPEG/GIF/BMP header at all."""
    hw = image_size(encoded)
    pixels = hw[0] * hw[1]
    return tf.case([
        (tf.equal(pixels, 0), lambda: tf.constant("not a PNG, JPEG, GIF or BMP image (no size in its header)")),
        (pixels > max_pixels, lambda: tf.strings.format("too many pixels: {}x{} > {}", (hw[1], hw[0], max_pixels)))],
        default=lambda: tf.constant(""), exclusive=False)


def checked(encoded: tf.Tensor, max_pixels: int | None) -> tf.Tensor:
    """`encoded` (one image), after asserting that its header allows decoding (None: no check).
    A record past its dataset's limit stops the reader with the reason, before gigabytes are
    allocated."""
    if max_pixels is None:
        return encoded
    error = size_error(encoded, max_pixels)
    with tf.control_dependencies([tf.debugging.Assert(tf.equal(error, ""), ["image refused:", error])]):
        return tf.identity(encoded)


def pngs_within(batch: tf.Tensor, max_pixels: int) -> tf.Tensor:
    """Whether every image of `batch` (a vector) is a PNG whose header declares at most
    `max_pixels`: a few vectorised ops for a whole batch of small images, which the full check
    (size_error per image) would make ~4x slower to decode (measured on 28x28 PNGs)."""
    head = tf.cast(tf.io.decode_raw(tf.strings.substr(batch, 0, 24), tf.uint8, fixed_length=24), tf.int64)
    big_endian = tf.constant(False)
    pixels = _number(head[:, 16:20], big_endian) * _number(head[:, 20:24], big_endian)
    png = tf.reduce_all(tf.equal(head[:, :8], list(b"\x89PNG\r\n\x1a\n")), axis=1)
    return tf.reduce_all(png & (pixels > 0) & (pixels <= max_pixels))


def upright(image: tf.Tensor, orientation) -> tf.Tensor:
    """Decoded pixels [height, width, channels] turned as EXIF `orientation` says, as
    PIL.ImageOps.exif_transpose does: 5-8 transpose first, then the flips."""
    orientation = tf.cast(orientation, tf.int64)
    image = tf.cond(orientation >= 5, lambda: transposed(image), lambda: image)
    flip_columns = tf.reduce_any(tf.equal(orientation, [2, 3, 6, 7]))
    flip_rows = tf.reduce_any(tf.equal(orientation, [3, 4, 7, 8]))
    image = tf.cond(flip_columns, lambda: tf.reverse(image, [1]), lambda: image)
    return tf.cond(flip_rows, lambda: tf.reverse(image, [0]), lambda: image)


def transposed(image: tf.Tensor) -> tf.Tensor:
    """[height, width, channels] -> [width, height, channels] as a gather of pixels: a Transpose of
    uint8 pixels inside tf.data makes TensorFlow 2.21 print two error lines per process
    (grappler's "remapper failed" and oneDNN's "supports DT_UINT8 only on platforms with
    AVX-512"), harmless but on every user's terminal; a gather prints nothing."""
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    order = tf.reshape(tf.range(height)[None, :] * width + tf.range(width)[:, None], [-1])
    return tf.reshape(tf.gather(tf.reshape(image, tf.stack([height * width, shape[2]])), order),
                      tf.stack([width, height, shape[2]]))
