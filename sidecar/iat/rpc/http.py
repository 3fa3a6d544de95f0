"""HTTP on 127.0.0.1 (aiohttp, in its own thread and event loop): `POST /rpc`, a websocket at `/ws`, the REST
routes generated from the registry, and `GET /openapi.json`.

Every request must carry `Authorization: Bearer <token>`, a loopback Host (DNS rebinding) and, when it has an
Origin, one on the allow-list (CSRF from a web page). Errors have the one body shape `{"error": {...}}`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
from concurrent.futures import Executor
from typing import TYPE_CHECKING

from aiohttp import WSCloseCode, WSMsgType, web

from iat.errors import (Forbidden, IATError, InvalidParams, InvalidRequest, MethodNotAllowed, NotFound, ParseError, PayloadTooLarge,
                        ShuttingDown, Unauthorized, error_object)
from iat.context import Session
from iat.rpc.openapi import openapi_document, path_template
from iat.rpc.outbox import Outbox
from iat.rpc.protocol import Dispatcher, encode, error_response, notification

if TYPE_CHECKING:
    from iat.registry import Command

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _host_name(host: str) -> str:
    if host.startswith("["):
        return host[: host.index("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def error_json(exc: BaseException, status: int | None = None, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": error_object(exc)}
    code = status or (exc.http_status if isinstance(exc, IATError) else 500)
    headers = dict(headers or {})
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, MethodNotAllowed):  # RFC 9110: a 405 lists the methods the resource takes
        headers.setdefault("Allow", ", ".join(exc.details.get("allowed", [])))
    return web.Response(body=encode(body), status=code, content_type="application/json", headers=headers or None)


class _AnsweringWebSocket(web.WebSocketResponse):
    """Answers a message over the size limit with payload_too_large before closing with 1009, like every other
    transport answers it (aiohttp alone would only close)."""

    too_big_reply: str | None = None

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG and self.too_big_reply and not self.closed:
            reply, self.too_big_reply = self.too_big_reply, None
            try:
                await self.send_str(reply)
            except (ConnectionError, RuntimeError):
                pass
        return await super().close(code=code, message=message, drain=drain)


def _refused(locs: list[list[str]], msg: str) -> InvalidParams:
    return InvalidParams(f"invalid params: {msg}",
                         details={"errors": [{"loc": loc, "msg": msg, "type": "extra_forbidden"} for loc in locs]})


class HttpTransport:
    def __init__(self, dispatcher: Dispatcher, executor: Executor, port: int, max_message_bytes: int,
                 allowed_origins: tuple[str, ...]):
        self.dispatcher = dispatcher
        self.app = dispatcher.app
        self.executor = executor
        self.allowed_origins = frozenset(allowed_origins)
        self.max_message_bytes = max_message_bytes
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._websockets: dict[web.WebSocketResponse, Outbox] = {}
        self._ws_calls: set[asyncio.Task] = set()  # websocket calls whose reply is not in an outbox yet
        # Bind now, in the caller's thread, so the port is known before sidecar.ready is printed.
        self._loop.run_until_complete(self._start(port))
        self._thread = threading.Thread(target=self._loop.run_forever, name="iat-http", daemon=True)

    async def _start(self, port: int) -> None:
        web_app = web.Application(middlewares=[self._guard], client_max_size=self.max_message_bytes)
        web_app.router.add_post("/rpc", self._rpc)
        web_app.router.add_get("/ws", self._ws)
        web_app.router.add_get("/openapi.json", self._openapi)
        # Routes whose command checks a token of its own (registry.Command.auth "instruction": an external agent's
        # callback): the guard lets any bearer through to them, and the handler checks it.
        self._own_auth: set = set()
        for cmd in self.app.registry:
            if cmd.route is not None:
                handler = self._rest_handler(cmd)
                if cmd.auth == "instruction":
                    self._own_auth.add(handler)
                web_app.router.add_route(cmd.route.method, cmd.route.path, handler)
        # The methods each path template takes, for 405s and for OpenAPI's precedence (see _guard).
        self._methods: dict[str, frozenset[str]] = {}
        for resource in web_app.router.resources():
            self._methods[resource.canonical] = self._methods.get(resource.canonical, frozenset()) | {
                r.method for r in resource}
        self._runner = web.AppRunner(web_app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        async def shutdown() -> None:
            # Replies of calls admitted before the stop reach their outbox, each outbox is written out, and
            # only then are the websockets closed.
            if self._ws_calls:
                await asyncio.wait(list(self._ws_calls), timeout=timeout / 2)
            loop = asyncio.get_running_loop()
            for ws, outbox in list(self._websockets.items()):
                await loop.run_in_executor(None, outbox.close, timeout / 4)
                await ws.close()
            if self._runner is not None:
                await self._runner.cleanup()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout)
        except Exception:  # noqa: BLE001 - stopping anyway
            log.warning("the HTTP server did not stop cleanly", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)

    # --- the guard: every request ---

    @web.middleware
    async def _guard(self, request: web.Request, handler) -> web.StreamResponse:
        if _host_name(request.host or "") not in LOOPBACK_HOSTS:
            return error_json(Forbidden("the Host header must name a loopback address"))
        origin = request.headers.get("Origin")
        if origin is not None and origin not in self.allowed_origins:
            return error_json(Forbidden(f"origin {origin!r} is not allowed"))
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), self.app.token.encode()):
            if getattr(request.match_info, "handler", None) not in self._own_auth:
                return error_json(Unauthorized("missing or wrong bearer token"))
        if self.app.stopping.is_set():
            return error_json(ShuttingDown("the sidecar is shutting down"))
        try:
            # OpenAPI reads /assets/import as its own path, never as /assets/{asset_id}: a method that the most
            # specific template does not take is a 405 there, even where a looser template would route it.
            matched = getattr(getattr(request.match_info.route, "resource", None), "canonical", None)
            template = path_template(self._methods, request.rel_url.raw_path)
            if matched and template and template != matched and request.method not in self._methods[template]:
                raise web.HTTPMethodNotAllowed(request.method, self._methods[template])
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return error_json(PayloadTooLarge(f"body over the {self.max_message_bytes}-byte limit",
                                              details={"limit_bytes": self.max_message_bytes}))
        except web.HTTPMethodNotAllowed as exc:
            template = path_template(self._methods, request.rel_url.raw_path)
            allowed = sorted(self._methods[template] if template else exc.allowed_methods)
            return error_json(MethodNotAllowed(f"{request.method} is not allowed on {request.path}",
                                               details={"allowed": allowed}))
        except web.HTTPNotFound:
            return error_json(NotFound(f"no route {request.path}", details={"path": request.path}))
        except web.HTTPException as exc:
            return error_json(InvalidRequest(exc.reason), status=exc.status)
        except Exception as exc:  # noqa: BLE001 - one body shape, even for a bug
            if self.app.stopping.is_set() and isinstance(exc, RuntimeError):  # the executor has shut down
                return error_json(ShuttingDown("the sidecar is shutting down"))
            self.dispatcher.log_failure(request.path, exc)
            return error_json(exc)

    def _session(self, transport: str) -> Session:
        return Session(transport, authenticated=True)  # the guard checked the token

    async def _in_executor(self, fn, *args):
        if self.app.stopping.is_set():  # the executor is draining: say so instead of failing to submit
            raise ShuttingDown("the sidecar is shutting down")
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # --- JSON-RPC over HTTP ---

    async def _rpc(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        reply = await self._in_executor(self.dispatcher.handle_bytes, body, self._session("http"))
        if reply is None:  # notifications only
            return web.Response(status=204)
        return web.Response(body=reply, content_type="application/json")

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        limit = self.max_message_bytes
        ws = _AnsweringWebSocket(max_msg_size=limit, heartbeat=30)
        await ws.prepare(request)
        loop = asyncio.get_running_loop()
        ws.too_big_reply = encode(error_response(None, PayloadTooLarge(
            f"message over the {limit}-byte limit", details={"limit_bytes": limit}))).decode()

        def send(data: bytes) -> None:  # on the outbox's thread: waits while the peer reads slowly
            asyncio.run_coroutine_threadsafe(ws.send_str(data.decode()), loop).result(30)

        def hang_up() -> None:
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(ws.close()))

        outbox = Outbox(send, peer=f"ws:{request.remote}", max_messages=self.app.settings.peer_outbox_messages,
                        on_overflow=hang_up)
        session = Session("ws", authenticated=True,
                          push=lambda name, payload: outbox.send(encode(notification(name, payload))))
        unsubscribe = self.app.events.subscribe(session.push)
        self._websockets[ws] = outbox
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    data = msg.data.encode()
                elif msg.type == WSMsgType.BINARY:
                    data = msg.data
                else:
                    continue
                task = asyncio.create_task(self._ws_handle(data, session, outbox))
                self._ws_calls.add(task)
                task.add_done_callback(self._ws_calls.discard)
        finally:
            unsubscribe()
            self._websockets.pop(ws, None)
            await loop.run_in_executor(None, outbox.close)
        return ws

    async def _ws_handle(self, data: bytes, session: Session, outbox: Outbox) -> None:
        if self.app.stopping.is_set():
            reply = self.dispatcher.handle_bytes(data, session, refuse=ShuttingDown("the sidecar is shutting down"))
        else:
            reply = await self._in_executor(self.dispatcher.handle_bytes, data, session)
        if reply is not None:
            outbox.send(reply)

    async def _openapi(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(openapi_document(self.app.registry, parts=self.app))

    # --- REST ---

    def _rest_handler(self, cmd: Command):
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                params = await self._rest_params(request, cmd)
                session = self._session("rest")
                if cmd.auth == "instruction":  # a bearer other than the app's token: the handler checks it
                    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
                    token = token.strip()
                    if scheme.lower() == "bearer" and token and not secrets.compare_digest(
                            token.encode(), self.app.token.encode()):
                        session.data["bearer"] = token
                result = await self._in_executor(self.dispatcher.call, cmd.name, params, session)
            except web.HTTPException:
                raise  # the guard maps aiohttp's own (413 for a body over the limit)
            except Exception as exc:  # noqa: BLE001 - one body shape for every failure
                self.dispatcher.log_failure(cmd.name, exc)
                return error_json(exc)
            return web.Response(body=encode(result), content_type="application/json")

        return handle

    @staticmethod
    async def _rest_params(request: web.Request, cmd: Command) -> dict:
        """The params of a REST call: the path parameters from the path only; the other fields from the JSON body
        (POST, PUT, PATCH) or the query string (GET, DELETE), as the OpenAPI document says."""
        if request.method in _BODY_METHODS:
            if request.query:
                raise _refused([["query", k] for k in request.query], "this route takes its params in a JSON body")
            params: dict = {}
            raw = await request.read() if request.can_read_body else b""
            if raw.strip():
                try:
                    params = json.loads(raw)
                except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                    raise ParseError(f"invalid JSON body: {type(exc).__name__}: {exc}"[:300]) from None
                if not isinstance(params, dict):
                    raise InvalidParams("the body must be a JSON object",
                                        details={"errors": [{"loc": ["body"], "msg": "must be a JSON object",
                                                             "type": "model_type"}]})
        else:
            repeated = sorted({k for k in request.query if len(request.query.getall(k)) > 1})
            if repeated:
                raise _refused([["query", k] for k in repeated], "a query parameter is given more than once")
            params = dict(request.query)
        # A path parameter comes from the path only: a body or query naming it (even with the same value) would
        # make the target ambiguous.
        clash = [k for k in request.match_info if k in params]
        if clash:
            raise _refused([[k] for k in clash], f"{', '.join(clash)} comes from the path only")
        params.update(request.match_info)
        return params
