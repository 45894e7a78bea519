"""Socket.IO and WebSocket handlers: seed A live swap (``live_swap``)."""
