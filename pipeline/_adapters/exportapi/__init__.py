"""The Export API client: status, listing, and resumable (ranged) downloads.

models.py parses answers strictly; boundary.py holds the host, token and
error-translation rules; client.py the calls, the listing and the breaker;
download.py ranged reads and resumable streams.
"""

from pipeline._adapters.exportapi.client import ExportApi, FileListing
from pipeline._adapters.exportapi.download import DownloadStream, RangeResult
from pipeline._adapters.exportapi.models import ExportFile, ExportStatus

__all__ = [
    "DownloadStream",
    "ExportApi",
    "ExportFile",
    "ExportStatus",
    "FileListing",
    "RangeResult",
]
