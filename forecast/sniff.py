"""What a file is, before pandas reads it: CSV text in some encoding, or something else named for what it is.

Workbooks, archives, compressed, columnar and binary files, and text with a byte-order mark of
UTF-16 or UTF-32, are recognised by their first bytes and refused with what to do instead; a
byte that is not valid in the file's encoding is named by its line.
"""

from __future__ import annotations

import codecs
import re
from typing import TYPE_CHECKING

from forecast.errors import InputError

if TYPE_CHECKING:
    from forecast.frame import CsvSpec

_HEAD_BYTES = 1 << 16
_CONVERT = "convert it to a UTF-8 CSV file (one timestamp column, one column per sensor)"
_FORMATS = (  # leading bytes -> what the file is and what to do with it
    (b"\xff\xfe\x00\x00", "UTF-32 text (byte-order mark)", "set data.encoding=utf-32, or save it as UTF-8"),
    (b"\x00\x00\xfe\xff", "UTF-32 text (byte-order mark)", "set data.encoding=utf-32, or save it as UTF-8"),
    (b"\xff\xfe", "UTF-16 text (byte-order mark)", "set data.encoding=utf-16, or save it as UTF-8"),
    (b"\xfe\xff", "UTF-16 text (byte-order mark)", "set data.encoding=utf-16, or save it as UTF-8"),
    (b"\x1f\x8b", "a gzip-compressed file", "decompress it first (gunzip FILE) and read the CSV inside"),
    (b"PAR1", "a Parquet file", _CONVERT),
    (b"ARROW1", "an Arrow (Feather) file", _CONVERT),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Excel 97-2003 workbook (.xls)", "export the sheet as CSV UTF-8"),
    (b"BZh", "a bzip2-compressed file", "decompress it first (bunzip2 FILE)"),
    (b"\xfd7zXZ\x00", "an xz-compressed file", "decompress it first (unxz FILE)"),
    (b"\x28\xb5\x2f\xfd", "a zstd-compressed file", "decompress it first (unzstd FILE)"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", "extract the CSV file and point data.path at it"),
    (b"%PDF", "a PDF document", _CONVERT),
    (b"SQLite format 3\x00", "an SQLite database", "export the table as CSV"),
)


def encoding(path: str, spec: CsvSpec) -> str:
    """The text encoding to read the file with, after refusing content that is not CSV text.

    data.encoding when set; else UTF-8, or Latin-1 for a file that is not UTF-8 and holds no
    UTF-8 multi-byte character (a UTF-8 file with a broken byte is an error naming its line).
    """
    try:
        with open(path, "rb") as file:
            head = file.read(_HEAD_BYTES)
    except OSError as error:
        raise InputError(f"cannot read '{path}': {error.strerror}.\nCheck the file's permissions, or point data.path elsewhere.") from None
    if spec.encoding is not None and codecs.lookup(spec.encoding).name.startswith(("utf-16", "utf-32")):
        return spec.encoding  # wide text: NUL bytes and a byte-order mark are expected
    for signature, what, fix in _FORMATS:
        if head.startswith(signature) and (signature != b"BZh" or head[4:10] == b"1AY&SY"):
            raise InputError(f"'{path}' is {what}, not a CSV text file.\nTo read it, {fix}.")
    if head.startswith(b"PK\x03\x04"):
        what = (
            "an Excel workbook (.xlsx)"
            if b"xl/" in head or b"[Content_Types].xml" in head
            else "an OpenDocument spreadsheet (.ods)"
            if b"opendocument.spreadsheet" in head
            else "a zip archive"
        )
        fix = "extract the CSV file and point data.path at it" if what == "a zip archive" else "export the sheet as CSV UTF-8"
        raise InputError(f"'{path}' is {what}, not a CSV text file.\nTo read it, {fix}.")
    control = [at for at, byte in enumerate(head[:4096]) if byte < 9 or 13 < byte < 32 or byte == 127]
    if control and (head[control[0]] == 0 or len(control) > 8):
        at = control[0]
        raise InputError(
            f"'{path}' holds binary data (byte 0x{head[at]:02x} on line {_line_at(head, at)}), not CSV text.\n"
            "Point data.path at the CSV export; if the file is UTF-16 text, set data.encoding=utf-16."
        )
    if spec.encoding is not None:
        return spec.encoding
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < _HEAD_BYTES)
    except UnicodeDecodeError:
        return fallback(path)
    return "utf-8"


def fallback(path: str) -> str:
    """Latin-1 for a file that is not UTF-8; an error for a UTF-8 file with a broken byte."""
    with open(path, "rb") as file:
        content = file.read()
    try:
        content.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as error:
        if re.search(rb"[\xc2-\xf4][\x80-\xbf]+", content) is None:
            return "latin-1"
        raise undecodable(path, content, error, "UTF-8", "data.encoding=latin-1 (or the file's encoding)") from None


def undecodable(path: str, content: bytes, error: UnicodeDecodeError, encoding: str, fix: str) -> InputError:
    at = error.start
    return InputError(
        f"'{path}' line {_line_at(content, at)}: byte 0x{content[at]:02x} is not valid {encoding} text.\nFix that line, or set {fix}."
    )


def _line_at(content: bytes, at: int) -> int:
    return content.count(b"\n", 0, at) + 1
