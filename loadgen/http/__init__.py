"""HTTP/1.1 over trio: the sans-IO fast path (``parser``, ``render``), h11 for what it declines,
the server, the client pool, deadlines and TLS. Import from the modules themselves."""
