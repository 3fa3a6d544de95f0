"""Loopback servers that implement vendors' documented HTTP contracts (OpenAI Images, ComfyUI, A1111), driven by
the connectors' real client code. Each binds 127.0.0.1 only."""
