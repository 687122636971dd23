"""Request bodies in, response bodies out: HTTP chunked framing and Content-Encoding codecs.

clickhouse-connect streams inserts with ``Transfer-Encoding: chunked`` and ``Content-Encoding: lz4``,
one LZ4 frame per Native block, so every decoder here accepts concatenated frames/members and works
incrementally: an insert is never held in memory whole.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator
from typing import IO

from clickhouse_endpoint.errors import ClickHouseError, codes

READ_SIZE = 1 << 20


class BodyError(ClickHouseError):
    """The request body itself is broken (framing or transport): the connection cannot be reused."""


def iter_request_body(rfile: IO[bytes] | io.BufferedIOBase, headers) -> Iterator[bytes]:
    """Yield the raw request body, de-chunked, in pieces of at most ``READ_SIZE`` bytes."""
    transfer = (headers.get("Transfer-Encoding") or "").lower()
    if "chunked" in transfer:
        while True:
            line = rfile.readline(65537)
            if not line:
                raise BodyError(codes.NETWORK_ERROR, "Unexpected end of chunked request body", "NETWORK_ERROR")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BodyError(
                    codes.BAD_ARGUMENTS, f"Malformed chunk size line {line[:40]!r}", "BAD_ARGUMENTS"
                ) from None
            if size == 0:
                while rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            remaining = size
            while remaining:
                piece = rfile.read(min(remaining, READ_SIZE))
                if not piece:
                    raise BodyError(codes.NETWORK_ERROR, "Unexpected end of chunked request body", "NETWORK_ERROR")
                remaining -= len(piece)
                yield piece
            rfile.readline(3)  # CRLF after the chunk
        return
    length = headers.get("Content-Length")
    remaining = int(length) if length and length.strip().isdigit() else 0
    while remaining > 0:
        piece = rfile.read(min(remaining, READ_SIZE))
        if not piece:
            raise BodyError(codes.NETWORK_ERROR, f"Request body ended {remaining} bytes early", "NETWORK_ERROR")
        remaining -= len(piece)
        yield piece


class _FrameChain:
    """Adapts one-frame decompressors (``eof`` + ``unused_data``) to a stream of concatenated frames."""

    def __init__(self, factory):
        self._factory = factory
        self._current = factory()
        self._started = False

    def decompress(self, data: bytes) -> bytes:
        out = []
        while data:
            self._started = True
            out.append(self._current.decompress(data))
            if not self._current.eof:
                break
            data = self._current.unused_data
            self._current = self._factory()
            self._started = False
        return b"".join(out)

    def check_end(self, encoding: str) -> None:
        if self._started and not self._current.eof:
            raise ClickHouseError(
                codes.CANNOT_DECOMPRESS, f"Request body ends inside a {encoding} frame", "CANNOT_DECOMPRESS"
            )


def _lz4_factory():
    import lz4.frame

    return lz4.frame.LZ4FrameDecompressor()


def _zstd_factory():
    try:
        from backports import zstd
    except ImportError:  # Python 3.14+
        from compression import zstd
    return zstd.ZstdDecompressor()


class _ZlibFrame:
    def __init__(self, wbits: int):
        self._obj = zlib.decompressobj(wbits=wbits)

    def decompress(self, data: bytes) -> bytes:
        return self._obj.decompress(data)

    @property
    def eof(self) -> bool:
        return self._obj.eof

    @property
    def unused_data(self) -> bytes:
        return self._obj.unused_data


class _Brotli:
    def __init__(self):
        import brotli

        self._obj = brotli.Decompressor()
        self.unused_data = b""

    def decompress(self, data: bytes) -> bytes:
        return self._obj.process(data)

    @property
    def eof(self) -> bool:
        return self._obj.is_finished()


_DECODERS = {
    "lz4": _lz4_factory,
    "zstd": _zstd_factory,
    "gzip": lambda: _ZlibFrame(31),
    "x-gzip": lambda: _ZlibFrame(31),
    "deflate": lambda: _ZlibFrame(15),
    "br": _Brotli,
}


def decode_body(chunks: Iterator[bytes], encoding: str | None) -> Iterator[bytes]:
    """Undo ``Content-Encoding`` on a stream of body pieces."""
    encoding = (encoding or "").strip().lower()
    if encoding in ("", "identity", "none"):
        yield from chunks
        return
    factory = _DECODERS.get(encoding)
    if factory is None:
        raise ClickHouseError(
            codes.UNKNOWN_COMPRESSION_METHOD,
            f"Unknown Content-Encoding '{encoding}': send lz4, zstd, gzip, deflate, br or an uncompressed body",
            "UNKNOWN_COMPRESSION_METHOD",
        )
    try:
        chain = _FrameChain(factory)
    except ImportError as exc:
        raise ClickHouseError(
            codes.UNKNOWN_COMPRESSION_METHOD,
            f"Content-Encoding '{encoding}' needs {exc.name}",
            "UNKNOWN_COMPRESSION_METHOD",
        ) from None
    for piece in chunks:
        try:
            out = chain.decompress(piece)
        except ClickHouseError:
            raise
        except Exception as exc:  # noqa: BLE001 - every codec library raises its own types; all mean a broken body
            raise ClickHouseError(
                codes.CANNOT_DECOMPRESS, f"Cannot decompress {encoding} request body: {exc}", "CANNOT_DECOMPRESS"
            ) from None
        if out:
            yield out
    chain.check_end(encoding)


def _brotli_available() -> bool:
    try:
        import brotli  # noqa: F401
    except ImportError:
        return False
    return True


# Cheapest first: most responses are read on the same machine, where speed beats ratio.
_RESPONSE_PREFERENCE = ("lz4", "zstd", "gzip", "deflate", "br")


def choose_response_encoding(accept_encoding: str | None) -> str | None:
    """Pick the Content-Encoding for a response from the client's Accept-Encoding list."""
    if not accept_encoding:
        return None
    offered = {part.split(";", 1)[0].strip().lower() for part in accept_encoding.split(",")}
    for name in _RESPONSE_PREFERENCE:
        if name in offered and (name != "br" or _brotli_available()):
            return name
    return None


def encode_body(data: bytes, encoding: str) -> bytes:
    """Compress a whole response body as one frame of ``encoding``."""
    if encoding == "lz4":
        import lz4.frame

        return lz4.frame.compress(data)
    if encoding == "zstd":
        try:
            from backports import zstd
        except ImportError:
            from compression import zstd  # type: ignore[no-redef]
        return zstd.compress(data)
    if encoding == "gzip":
        return gzip.compress(data, compresslevel=3)
    if encoding == "deflate":
        return zlib.compress(data, 3)
    if encoding == "br":
        import brotli

        return brotli.compress(data, quality=3)
    raise ValueError(f"unsupported response encoding {encoding}")
