"""The HTTP side served by this process (quart-trio on hypercorn): health and readiness."""

__all__: list[str] = []
