"""Serving I/O: the NDJSON socket server, serving processes fed through shared memory, request metrics, the client."""
