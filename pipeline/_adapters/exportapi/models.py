"""The Export API's answers as typed values, parsed strictly at the edge.

cattrs with strict ``str`` and ``int`` hooks: an answer that does not have
the contract's shape is :class:`Malformed`, which the boundary turns into a
permanent error of ours, never a half-parsed value.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

import attrs
import cattrs
import cattrs.errors
import httpx
from cattrs.gen import make_dict_structure_fn, override

__all__ = ["ExportFile", "ExportStatus", "Malformed", "Page", "structure"]

T = TypeVar("T")


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and value < 0:
        msg = f"{attribute.name} is negative ({value})"
        raise ValueError(msg)


@attrs.frozen
class ExportStatus:
    """What the API says about one export; ``file_count`` is None until it is READY."""

    export_id: str
    status: Literal["PENDING", "READY", "FAILED"]
    file_count: int | None = attrs.field(validator=_non_negative)


@attrs.frozen
class ExportFile:
    """One ZIP file of a READY export, as the listing describes it."""

    file_id: str
    name: str
    download_url: str
    size_bytes: int = attrs.field(validator=_non_negative)


@attrs.frozen
class Page:
    files: list[ExportFile]
    next_cursor: str | None


class Malformed(Exception):
    """An answer whose body is not the JSON the contract describes."""


def _strict_str(value: object, _: object) -> str:
    if not isinstance(value, str):
        msg = f"expected a string, got {type(value).__name__}"
        raise Malformed(msg)
    return value


def _strict_int(value: object, _: object) -> int:
    # cattrs would happily turn "12" or 12.7 into 12; an API that sends those
    # is not the API we were promised.
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"expected an integer, got {type(value).__name__}"
        raise Malformed(msg)
    return value


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(detailed_validation=False)
    conv.register_structure_hook(str, _strict_str)
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook(
        ExportStatus,
        make_dict_structure_fn(
            ExportStatus,
            conv,
            _cattrs_detailed_validation=False,
            export_id=override(rename="exportId"),
            file_count=override(rename="fileCount"),
        ),
    )
    conv.register_structure_hook(
        ExportFile,
        make_dict_structure_fn(
            ExportFile,
            conv,
            _cattrs_detailed_validation=False,
            file_id=override(rename="fileId"),
            download_url=override(rename="downloadUrl"),
            size_bytes=override(rename="sizeBytes"),
        ),
    )
    conv.register_structure_hook(
        Page,
        make_dict_structure_fn(
            Page,
            conv,
            _cattrs_detailed_validation=False,
            next_cursor=override(rename="nextCursor"),
        ),
    )
    return conv


_converter = _make_converter()


def structure(response: httpx.Response, cls: type[T]) -> T:
    """``cls`` from the JSON body, or :class:`Malformed` saying what is wrong."""
    try:
        body = response.json()
    except ValueError as err:
        msg = "body is not JSON"
        raise Malformed(msg) from err
    if not isinstance(body, dict):
        msg = f"expected a JSON object, got {type(body).__name__}"
        raise Malformed(msg)
    try:
        return _converter.structure(body, cls)
    except Malformed:
        raise
    except KeyError as err:
        msg = f"missing field {err}"
        raise Malformed(msg) from err
    except (cattrs.BaseValidationError, cattrs.errors.CattrsError, TypeError, ValueError) as err:
        msg = " ".join(str(err).split())[:200]
        raise Malformed(msg) from err
