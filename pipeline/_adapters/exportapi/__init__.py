"""The Export API client: status, listing, and resumable (ranged) downloads.

models.py parses answers strictly; boundary.py holds the host, token and
error-translation rules; session.py the HTTP client, auth, breaker, policy and
the one attempt loop, handed to both client.py (the calls and the listing) and
download.py (ranged reads and resumable streams). Imports go one way:
client → download → session → boundary → models.
"""

from pipeline._adapters.exportapi.client import ExportApi, FileListing
from pipeline._adapters.exportapi.download import DownloadStream, RangeResult
from pipeline._adapters.exportapi.models import ExportFile, ExportStatus
from pipeline._adapters.exportapi.session import ExportApiSession

__all__ = [
    "DownloadStream",
    "ExportApi",
    "ExportApiSession",
    "ExportFile",
    "ExportStatus",
    "FileListing",
    "RangeResult",
]
