"""The proxy's I/O edge: sockets, TLS, sessions, upstream connections, workers."""
