"""The ASGI app: its assembly, the request and connection limits, the OpenAPI document."""
