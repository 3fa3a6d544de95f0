"""openai SDK clients for the OpenAI-compatible providers (`llm`, `openai_audio`): one per (endpoint, key), kept.

A client holds an HTTP connection pool, so it is made once and reused; the cache is keyed by the key's sha256 (the
key itself is never a dict key that could be logged), bounded, and evicts the least recently used (dropped, not
closed: another thread may be using it). The SDK's own retries are off (the ledger retries) and its attempt limit
is the account's timeout. For a local server configured without a key the SDK is given a placeholder.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit

from iat.errors import ProviderError
from iat.providers.base import Account, ProviderConfig

OPENAI_ENDPOINT = "https://api.openai.com/v1"
PLACEHOLDER_KEY = "sk-no-key-needed"
CLIENT_CACHE = 16


def is_openai(config: ProviderConfig) -> bool:
    """The account talks to api.openai.com (which needs a key), not to a local OpenAI-compatible server."""
    return config.endpoint is None or urlsplit(config.endpoint).hostname == "api.openai.com"


class Clients:
    def __init__(self, code: str) -> None:
        self.code = code
        self._clients: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, account: Account):
        config = account.config
        endpoint = config.endpoint or OPENAI_ENDPOINT
        key = account.secrets.get("api_key") or ""
        if not key and is_openai(config):
            raise ProviderError(f"provider {self.code} needs the secret api_key; store it with secrets.set",
                                details={"provider": self.code})
        slot = (endpoint, hashlib.sha256(key.encode()).hexdigest())
        with self._lock:
            client = self._clients.get(slot)
            if client is not None:
                self._clients.move_to_end(slot)
                return client
        import openai

        client = openai.OpenAI(api_key=key or PLACEHOLDER_KEY, base_url=endpoint, max_retries=0,
                               timeout=config.timeout_s)
        # The SDK reads OPENAI_ORG_ID / OPENAI_PROJECT_ID from the environment: the account says what is sent.
        client.organization, client.project = None, None
        with self._lock:
            client = self._clients.setdefault(slot, client)
            while len(self._clients) > CLIENT_CACHE:
                self._clients.popitem(last=False)
        return client


def key_status(code: str, account: Account, status):
    """`status` (the provider's BaseProvider.status), made not ready when the account talks to api.openai.com
    without an api_key: a local server needs none."""
    from iat.providers.base import ProviderStatus

    if status.ready and is_openai(account.config) and not account.secrets.get("api_key"):
        return ProviderStatus(False, f"provider {code} on api.openai.com needs the secret api_key; store it with "
                                     f"secrets.set, or set an endpoint for a local server")
    return status
