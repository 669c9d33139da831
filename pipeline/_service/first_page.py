"""An export's status and the first page of its listing, asked for at the same time.

A new export is usually READY, and its first page is read before its job
begins (the begin write carries a one-page listing), so for a message from
outside both requests go out together and the export starts one Export API
round trip sooner (issue 22). Should the status say PENDING or FAILED, the
page is abandoned (a PENDING export's page would be a 409); a page that
failed counts only once the export is READY, as it would have asked after
the status. Our own messages (a PENDING export polled again, a hand-back)
ask one after the other, so a long wait for an export costs one request per
poll, not two.
"""

from __future__ import annotations

import trio

from pipeline._adapters.exportapi import ExportApi, ExportStatus, FileListing

__all__ = ["status_and_first_page"]


async def status_and_first_page(
    api: ExportApi, export_id: str, pages: FileListing, *, together: bool
) -> tuple[ExportStatus, Exception | None]:
    """The export's status; with ``together``, ``pages``' first page read at the same time.

    Returns the status and the error the first page met, if any: the caller
    raises it (or takes it for the listing's fault) once the status is READY;
    a page read without error is held by ``pages.peek()``. The status call's
    own errors are raised as they are.
    """
    if not together:
        return await api.get_status(export_id), None
    met: list[Exception] = []

    async def first_page() -> None:
        try:
            await pages.peek()
        except Exception as err:  # decided on by the caller, after the status
            met.append(err)

    status: ExportStatus | None = None
    failed: Exception | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(first_page)
        try:
            status = await api.get_status(export_id)
        except Exception as err:  # raised as it is, not in the nursery's group
            failed = err
        if status is None or status.status != "READY":
            nursery.cancel_scope.cancel()
    if failed is not None:
        raise failed
    assert status is not None
    return status, (met[0] if met else None)
