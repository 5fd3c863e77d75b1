"""The web control page: an HTTP and WebSocket server on its own thread (`engine/web/server.py`),
its JSON messages (`messages.py`) and the page itself (`static/`, no build step, no CDN)."""
