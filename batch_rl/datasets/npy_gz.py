"""Gzip-compressed .npy files, read as a stream: the files of a DQN Replay checkpoint.

A payload is decompressed straight into a caller's array (no second copy), every I/O,
gzip or header problem is a ReplayFormatError naming the file, and pickled (object)
arrays are refused without being unpickled. Paths may be local or gs://.
"""
from __future__ import annotations

import gzip
import zlib

import numpy as np

from batch_rl.tf_utils import tensorflow

# Decompress in 1 MiB pieces: gzip's readinto() allocates a temporary bytes object of the
# requested size (plus a copy inside BufferedReader), so the chunk bounds the overhead.
_CHUNK = 1 << 20
_GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile, OSError)

class ReplayFormatError(ValueError):
    """A replay directory or file does not follow the DQN Replay format."""


class NpyStream:
    """Opens ``path`` (gzip of .npy) and parses its header; use as a context manager.

    Every I/O or decompression failure surfaces as ReplayFormatError naming the path.
    """

    def __init__(self, path: str):
        self.path = path
        self._gfile = None
        self._gz = None

    def __enter__(self) -> "NpyStream":
        tf = tensorflow()
        try:
            self._gfile = tf.io.gfile.GFile(self.path, "rb")
            self._gz = gzip.GzipFile(fileobj=self._gfile, mode="rb")
            version = np.lib.format.read_magic(self._gz)
            if version == (1, 0):
                header = np.lib.format.read_array_header_1_0(self._gz)
            elif version == (2, 0):
                header = np.lib.format.read_array_header_2_0(self._gz)
            else:
                self._fail(f"unsupported .npy format version {version}; expected 1.0 or 2.0")
        except ReplayFormatError:
            self.__exit__(None, None, None)
            raise
        except tf.errors.NotFoundError:
            self.__exit__(None, None, None)
            self._fail("file not found")
        except tf.errors.OpError as e:  # Permissions, gs:// transport errors, ...
            self.__exit__(None, None, None)
            self._fail(f"cannot be read ({type(e).__name__}: {e.message})")
        except Exception as e:  # noqa: BLE001 - anything here means unreadable file.
            self.__exit__(None, None, None)
            self._fail(
                f"not a gzip-compressed .npy file ({type(e).__name__}: {e}); a pickle here "
                "(as Dopamine writes for episode_end_indices) is refused by design"
            )
        self.shape, fortran_order, self.dtype = header
        if self.dtype.hasobject:
            self.__exit__(None, None, None)
            self._fail(f"holds an object array (dtype {self.dtype}), which needs unpickling; "
                       "expected a plain numeric array saved with allow_pickle=False")
        if fortran_order:
            self.__exit__(None, None, None)
            self._fail("holds a Fortran-ordered array; expected C order as np.save writes "
                       "for Dopamine's C-contiguous buffers")
        return self

    def __exit__(self, *exc) -> None:
        for f in (self._gz, self._gfile):
            if f is not None:
                try:
                    f.close()
                except Exception:  # noqa: BLE001 - closing a broken stream must not mask.
                    pass
        self._gz = self._gfile = None

    def _fail(self, what: str):
        raise ReplayFormatError(f"Replay file {self.path!r}: {what}.")

    def read_into(self, out: np.ndarray) -> np.ndarray:
        """Streams the payload into C-contiguous ``out`` (same dtype and shape as the header)."""
        assert out.dtype == self.dtype and out.shape == self.shape and out.flags.c_contiguous
        flat = out.reshape(-1).view(np.uint8)  # A view: reshape of a contiguous array.
        pos = 0
        tf = tensorflow()
        try:
            while pos < flat.size:
                n = self._gz.readinto(flat[pos : pos + _CHUNK])
                if not n:
                    self._fail(f"payload ends after {pos} of {flat.size} bytes "
                               f"(header says {self.dtype} {self.shape}); file is truncated")
                pos += n
            # Reading to the end makes gzip verify its CRC and length trailer.
            if self._gz.read(1):
                self._fail(f"has data after the {flat.size}-byte payload of {self.dtype} "
                           f"{self.shape}; expected exactly one array")
        except ReplayFormatError:
            raise
        except (*_GZIP_ERRORS, tf.errors.OpError) as e:
            self._fail(f"is truncated or corrupt ({type(e).__name__}: {e}); expected a "
                       f"complete gzip stream of a {self.dtype} {self.shape} .npy array")
        return out

    def read(self) -> np.ndarray:
        return self.read_into(np.empty(self.shape, dtype=self.dtype))


def read_array(path: str) -> np.ndarray:
    """The whole array of one gzip-compressed .npy file."""
    with NpyStream(path) as s:
        return s.read()
