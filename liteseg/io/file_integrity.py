"""Is an image file complete? Checked beside SimpleITK's read (`images.read_image`), because ITK
reads a NIfTI file cut short (an interrupted copy or download) without a word, the missing voxels
as zeros, and a .nii.gz corrupted inside as garbage.

- `.nii`: the file must hold the bytes its header promises (vox_offset + voxels * bitpix / 8).
- `.nii.gz`: the whole gzip stream is inflated once and its CRC-32 and length checked (about the
  cost of ITK's own decompression), then the header's promise as for `.nii`.
- `.mha` / `.mhd`: the data after the header (or the `.raw` file) must be as long as DimSize,
  ElementType and channels (or CompressedDataSize) say; ITK refuses such files too, but with
  a message that does not say why.
- NRRD: ITK's reader already refuses short data with a clear message.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path
from typing import Optional

from liteseg.errors import InvalidImageError

_CHUNK = 1 << 22
GZIP_MAGIC = b"\x1f\x8b"
_META_TYPE_BYTES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
    "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}


def check_file_complete(path: Path) -> None:
    """Raise InvalidImageError when `path` holds fewer voxel bytes than its header says or its
    compressed stream is cut short or corrupted. Files of other formats, and files whose header
    cannot be parsed (ITK then says what is wrong), pass."""
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        with path.open("rb") as handle:
            if handle.read(2) != GZIP_MAGIC:
                return  # not gzip at all: ITK says what it is
        header, length = _inflate_checked(path)
        _check_length(path, _nifti_expected_bytes(header), length, "uncompressed")
    elif name.endswith(".nii"):
        with path.open("rb") as handle:
            header = handle.read(540)
        _check_length(path, _nifti_expected_bytes(header), path.stat().st_size, "")
    elif name.endswith((".mha", ".mhd")):
        _check_metaimage(path)


def _truncated(path: Path, detail: str) -> InvalidImageError:
    return InvalidImageError(f"{path} is truncated or corrupted ({detail}): an interrupted copy or download? "
                             "Copy the file again")


def _check_length(path: Path, expected: Optional[int], length: int, what: str) -> None:
    if expected is not None and length < expected:
        size = f"{what} size" if what else "size"
        raise _truncated(path, f"{size} {length:,} bytes, its header promises {expected:,}")


def _inflate_checked(path: Path) -> tuple[bytes, int]:
    """The first 540 uncompressed bytes and the uncompressed length of a gzip file, inflating
    all of it (zlib checks each member's CRC-32 and length); raises on a cut or corrupted stream."""
    head, length = b"", 0
    inflater = zlib.decompressobj(wbits=31)
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                while chunk:
                    out = inflater.decompress(chunk)
                    head += out[: max(0, 540 - len(head))]
                    length += len(out)
                    chunk = inflater.unused_data if inflater.eof else b""
                    if chunk:  # a further gzip member
                        inflater = zlib.decompressobj(wbits=31)
    except zlib.error as error:
        raise _truncated(path, f"gzip: {error}") from None
    if not inflater.eof:
        raise _truncated(path, "the gzip stream ends before its end marker")
    return head, length


def _nifti_expected_bytes(header: bytes) -> Optional[int]:
    """vox_offset + voxels * bitpix / 8 from a NIfTI-1 or NIfTI-2 header (either byte order);
    None when `header` is not one."""
    for order in "<>":
        if len(header) < 348:
            return None
        size = struct.unpack(order + "i", header[:4])[0]
        if size == 348:
            dim = struct.unpack(order + "8h", header[40:56])
            bitpix = struct.unpack(order + "h", header[72:74])[0]
            offset = struct.unpack(order + "f", header[108:112])[0]
        elif size == 540 and len(header) >= 540:
            bitpix = struct.unpack(order + "h", header[14:16])[0]
            dim = struct.unpack(order + "8q", header[16:80])
            offset = struct.unpack(order + "q", header[168:176])[0]
        else:
            continue
        if not 1 <= dim[0] <= 7 or bitpix <= 0 or not math.isfinite(offset):
            return None
        return int(offset) + math.prod(max(int(d), 1) for d in dim[1 : dim[0] + 1]) * bitpix // 8
    return None


def _check_metaimage(path: Path) -> None:
    """Compare the data a MetaImage header promises with what follows it (or the data file)."""
    fields: dict[str, str] = {}
    with path.open("rb") as handle:
        while line := handle.readline(4096):
            key, _, value = line.decode("latin-1").partition("=")
            fields[key.strip()] = value.strip()
            if key.strip() == "ElementDataFile":
                break
        data_start = handle.tell()
    try:
        voxels = math.prod(int(v) for v in fields["DimSize"].split())
        channels = int(fields.get("ElementNumberOfChannels", "1"))
        expected = voxels * channels * _META_TYPE_BYTES[fields["ElementType"]]
        data_file = fields["ElementDataFile"]
    except (KeyError, ValueError):
        return  # not a header we can read: ITK will say why
    if fields.get("CompressedData", "False").lower() == "true":
        if "CompressedDataSize" not in fields:
            return
        expected = int(fields["CompressedDataSize"])
    if data_file == "LOCAL":
        _check_length(path, expected, path.stat().st_size - data_start, "data")
    elif "%" not in data_file and data_file != "LIST":
        raw = path.parent / data_file
        if not raw.is_file():
            raise InvalidImageError(f"{path}: its data file {raw.name} is missing")
        _check_length(raw, expected, raw.stat().st_size, "")
