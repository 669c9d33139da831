"""ZIP reading without I/O: records and refusal rules, the stream reader, the decoder."""

__all__: list[str] = []
