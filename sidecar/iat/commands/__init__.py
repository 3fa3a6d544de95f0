"""Command modules: one per domain, each command declared once with iat.registry.command."""
