"""The last value of a few scalar tags in a TensorBoard event file, without TensorFlow.

An event file is a sequence of TFRecords: an 8-byte little-endian length, the masked
CRC-32C of those 8 bytes, the serialized `Event`, and the masked CRC-32C of the data.
`status` needs only the newest values, which are at the end of the file, so this
reads the file's tail: it finds the first record boundary in the tail (a position
whose length field matches its CRC), parses only the records whose bytes contain one
of the tags, and reads a larger tail only when a tag is not in it. A record still
being written (cut off at the end) is ignored. Events are parsed with the protobuf
classes tensorboard ships, which do not import TensorFlow.
"""
import os
import struct
from typing import Optional, Sequence

_TAIL_BYTES = 1 << 16
_HEADER = 12  # length (8) + its CRC (4); the data's CRC (4) follows the data
_CRC_TABLE = []
for _n in range(256):
  _c = _n
  for _ in range(8):
    _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
  _CRC_TABLE.append(_c)


def _masked_crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  crc ^= 0xFFFFFFFF
  return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _header_ok(buf: bytes, at: int) -> bool:
  if at + _HEADER > len(buf):
    return False
  (length,) = struct.unpack_from("<Q", buf, at)
  if length > len(buf):  # cannot start a record in this buffer: skip the CRC
    return False
  (crc,) = struct.unpack_from("<I", buf, at + 8)
  return crc == _masked_crc32c(buf[at:at + 8])


def _records(buf: bytes, start: int):
  """The complete records of buf from the boundary `start` on."""
  at = start
  while _header_ok(buf, at):
    (length,) = struct.unpack_from("<Q", buf, at)
    end = at + _HEADER + length
    if end + 4 > len(buf):
      return  # the record being written
    yield buf[at + _HEADER:end]
    at = end + 4


def _first_boundary(buf: bytes) -> Optional[int]:
  for at in range(max(0, len(buf) - _HEADER)):
    if _header_ok(buf, at):
      return at
  return None


def _scalar(value) -> Optional[float]:
  kind = value.WhichOneof("value")
  if kind == "simple_value":
    return float(value.simple_value)
  if kind != "tensor":
    return None
  tensor = value.tensor
  if tensor.float_val:
    return float(tensor.float_val[0])
  if tensor.double_val:
    return float(tensor.double_val[0])
  formats = {1: "<f", 2: "<d"}  # DT_FLOAT, DT_DOUBLE
  if tensor.tensor_content and tensor.dtype in formats:
    return float(struct.unpack_from(formats[tensor.dtype], tensor.tensor_content)[0])
  return None


def last_scalars(path: str, tags: Sequence[str]) -> dict[str, tuple[int, float]]:
  """{tag: (step, value)} of the last event of each of `tags` in the file.

  Tags the file does not hold are left out; so is everything when the file cannot be
  read or tensorboard's protobuf classes are missing.
  """
  try:
    from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top
  except ImportError:
    return {}
  wanted = {tag: tag.encode() for tag in tags}
  try:
    size = os.path.getsize(path)
  except OSError:
    return {}
  tail = _TAIL_BYTES
  while True:
    offset = max(0, size - tail)
    try:
      with open(path, "rb") as f:
        f.seek(offset)
        buf = f.read(size - offset)
    except OSError:
      return {}
    start = 0 if offset == 0 else _first_boundary(buf)
    found: dict[str, tuple[int, float]] = {}
    if start is not None:
      for record in _records(buf, start):
        if not any(tag in record for tag in wanted.values()):
          continue
        try:
          event = event_pb2.Event.FromString(record)
        except Exception:  # pylint: disable=broad-except  (a corrupt record)
          continue
        for value in event.summary.value:
          if value.tag in wanted:
            number = _scalar(value)
            if number is not None:
              found[value.tag] = (int(event.step), number)
    if len(found) == len(wanted) or offset == 0:
      return found
    tail *= 8
