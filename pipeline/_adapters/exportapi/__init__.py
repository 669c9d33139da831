"""The Export API client: status, listing, and resumable (ranged) downloads."""

__all__: list[str] = []
