"""A proxied request: forward to the origin, then relay the answer or take it over (F12–F22).

``ProxySession`` is both the connection's request handler (client body in) and the origin
exchange's response handler (origin response out). Non-GRIP responses stream through with
backpressure; a GRIP response is buffered (≤ 100,000 bytes, F19), parsed by
``core.instruct`` and turned into a hold (``io.holds``) or a plain answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gripd.core import headers as hdr
from gripd.core.cors import apply_cors
from gripd.core.errors import InstructError, OriginConnectError, OriginError
from gripd.core.filters import FilterError, process_initial_body
from gripd.core.forward import ClientRequestInfo, logical_client_address, origin_request_headers
from gripd.core.http import (
    LAST_CHUNK,
    HttpResponse,
    body_allowed,
    encode_chunk,
    encode_head,
    reason_phrase,
    text_response,
)
from gripd.core.instruct import Channel, Instruct, is_grip_response, parse_instruct
from gripd.core.jsonp import JsonpStream, wrap_response
from gripd.core.requestlog import request_log_line
from gripd.core.routes import Route, Target, rewrite_path, test_target_path
from gripd.core.testhandler import answer_test_request
from gripd.io.observe.events import Events, Transport, requests_observed
from gripd.io.origin.endpoint import Endpoint, endpoints_for, origin_form
from gripd.io.origin.http import BodyFraming, OriginExchange

if TYPE_CHECKING:
    from gripd.core.jsonp import JsonpRequest
    from gripd.io.context import OriginContext, ProxyHost
    from gripd.io.listener.conn import ClientConn
    from gripd.io.listener.request import Request

log = logging.getLogger("gripd.proxy")

# F17/F19: request bodies are kept up to this size (for retries and GRIP); GRIP responses are
# buffered up to this size before parsing.
MAX_BUFFERED = 100_000
# Request body bytes held while the origin connection is being made; past this, stop reading.
UNSENT_BODY_MAX = 256 * 1024

_STRIP_PASS_RESPONSE = ("connection", "keep-alive", "transfer-encoding")


class ProxySession:
    """Forwards one client request to its route's targets and handles the answer."""

    __slots__ = (
        "_body_buf",
        "_body_done",
        "_body_over",
        "_body_total",
        "_chunked",
        "_closed",
        "_exchange",
        "_grip_buf",
        "_grip_size",
        "_jstream",
        "_keep_alive",
        "_mode",
        "_pass_bytes",
        "_released",
        "_resp_code",
        "_resp_headers",
        "_resp_reason",
        "_started",
        "_t0",
        "_task",
        "_through",
        "_unsent",
        "_unsent_size",
        "app",
        "conn",
        "last_ids",
        "req",
        "retry",
        "route",
        "target_label",
        "trusted",
    )

    def __init__(
        self,
        app: ProxyHost,
        conn: ClientConn,
        req: Request,
        route: Route,
        *,
        trusted: bool = False,
        retry: bool = False,
        body: list[bytes] | None = None,
        last_ids: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.app = app
        self.conn = conn
        self.req = req
        self.route = route
        self.trusted = trusted
        self.retry = retry
        self.last_ids = last_ids  # Grip-Last on retries (F23, F27)
        self.target_label = ""
        self._exchange: OriginExchange | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._started = False  # response bytes have gone to the client
        self._mode = ""  # "" until the origin answers, then "pass" or "grip"
        self._body_buf: list[bytes] = list(body) if body is not None else []
        self._unsent: list[bytes] = list(self._body_buf)
        self._unsent_size = 0
        self._body_total = sum(len(b) for b in self._body_buf)
        self._body_over = False
        self._body_done = body is not None
        self._grip_buf: list[bytes] = []
        self._grip_size = 0
        self._through: Instruct | None = None  # F19 oversized stream hold streamed through
        self._jstream: JsonpStream | None = None  # F46 JSON-P wrapping a streamed response
        self._resp_code = 0
        self._resp_reason = ""
        self._resp_headers: hdr.Headers = []
        self._chunked = False
        self._keep_alive = True
        self._pass_bytes = 0
        self._t0 = 0.0
        self._released = retry  # retries do not count against max_open_requests

    # -- start -------------------------------------------------------------------------------

    def start(self) -> None:
        self.conn.set_handler(self)
        if not self.retry:  # a retry goes on with its hold's request
            request_stats_started(
                self.app, self.app.engine.events, self.conn, self.req, self.route, self.trusted
            )
        if body := self.req.body_chunks:
            # Bytes that arrived before this session took the request (pipelining).
            self.req.body_chunks = []
            for chunk in body:
                self._take_body(chunk)
        if self.req.body_done:
            self._body_done = True
        target = self.route.targets[0]
        if target.kind == "test":
            if self._body_done:
                self._answer_test()
            return
        if target.kind != "host":
            self._fail(f"Unsupported target type for route: {target.kind}")
            return
        if hdr.contains(self.req.headers, "expect") and not self._body_done:
            self.conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._start_request()

    def _take_body(self, data: bytes) -> None:
        self._body_total += len(data)
        if self._body_total > self.app.config.max_request_body:
            self._fail_client(413, "Request Entity Too Large\n")
            return
        if not self._body_over:
            if self._body_total <= MAX_BUFFERED:
                self._body_buf.append(data)
            else:
                self._body_over = True
        ex = self._exchange
        if ex is not None:
            ex.send_body(data)
        else:
            # Not connected yet: hold the bytes, and stop reading past a bound.
            self._unsent.append(data)
            self._unsent_size += len(data)
            if self._unsent_size > UNSENT_BODY_MAX:
                self.conn.pause_reading()

    def _endpoints(self) -> list[Endpoint]:
        host = hdr.get(self.req.headers, "host") or ""
        return endpoints_for(self.route.targets, self.route.as_host, host)

    def _origin_headers(self, target: Target) -> hdr.Headers:
        app = self.app
        req = self.req
        info = ClientRequestInfo(
            method=req.method,
            path=req.url,
            headers=req.headers,
            peer_ip=self.conn.peer,
            tls=app.client_tls(req.headers, req.tls),
        )
        token = None
        if not self.route.no_grip and not self.trusted:
            token = app.grip_sig_token(self.route)
        # Without Content-Length and Transfer-Encoding (framing is the origin client's)
        return origin_request_headers(
            info,
            self.route,
            target,
            app.forward,
            token=token,
            trusted=self.trusted,
            last_ids=self.last_ids,
        )

    def _request(self) -> tuple[hdr.Headers, BodyFraming, int, str, list[Endpoint]]:
        """The origin request: headers, body framing, length, path and endpoints."""
        target = self.route.targets[0]
        headers = self._origin_headers(target)
        framing: BodyFraming = "none"
        length = 0
        te = (hdr.get(self.req.headers, "transfer-encoding") or "").lower()
        if self.retry or self._body_done:
            length = self._body_total
            framing = "length" if (length or _has_body(self.req)) else "none"
            if framing == "length":
                headers.append(("Content-Length", str(length)))
        elif "chunked" in te:
            framing = "chunked"
            headers.append(("Transfer-Encoding", "chunked"))
        elif (cl := hdr.get(self.req.headers, "content-length")) is not None:
            framing = "length"
            length = int(cl) if cl.strip().isdigit() else 0
            headers.append(("Content-Length", str(length)))
        path = rewrite_path(self.route, origin_form(self.req.url))
        return headers, framing, length, path, self._endpoints()

    def _start_request(self) -> None:
        """Send the request to the origin: at once on an idle keep-alive connection, else in a
        task that connects first (F10 failover). Body bytes with no framing yet (a JSON-P
        rewrite's body before the request is complete) go to the task, which runs once the
        request is read and its length known."""
        if self._unsent and not self._body_done:
            self._task = self.app.loop.create_task(self._open())
            return
        headers, framing, length, path, endpoints = self._request()
        self._t0 = self.app.loop.time()
        ex = self.app.pool.open_idle(
            endpoints,
            self.req.method,
            path,
            headers,
            self,
            body_framing=framing,
            content_length=length,
        )
        if ex is not None:
            self._opened(ex)
        else:
            self._task = self.app.loop.create_task(
                self._open((headers, framing, length, path, endpoints))
            )

    async def _open(
        self, request: tuple[hdr.Headers, BodyFraming, int, str, list[Endpoint]] | None = None
    ) -> None:
        headers, framing, length, path, endpoints = request or self._request()
        if request is None:
            self._t0 = self.app.loop.time()
        try:
            ex = await self.app.pool.open(
                endpoints,
                self.req.method,
                path,
                headers,
                self,
                body_framing=framing,
                content_length=length,
            )
        except OriginConnectError as e:
            self._fail(str(e))
            return
        except OriginError as e:
            self._fail(f"Error while proxying to origin: {e}")
            return
        except asyncio.CancelledError:
            raise
        if self._closed:
            ex.abort()
            return
        self._opened(ex)

    def _opened(self, ex: OriginExchange) -> None:
        self._exchange = ex
        self.target_label = ex.endpoint.label()
        ex.on_request_pause = self.conn.pause_reading
        ex.on_request_resume = self.conn.resume_reading
        unsent, self._unsent = self._unsent, []
        self._unsent_size = 0
        for chunk in unsent:
            ex.send_body(chunk)
        self.conn.resume_reading()
        if self._body_done:
            ex.end_body()

    # -- client side (RequestHandler) --------------------------------------------------------

    def on_client_body(self, data: bytes) -> None:
        self._take_body(data)

    def on_client_body_end(self) -> None:
        self._body_done = True
        if self.route.targets[0].kind == "test":
            self._answer_test()
            return
        ex = self._exchange
        if ex is not None:
            ex.end_body()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self.app.request_done()

    def on_client_closed(self) -> None:
        self._release()
        self._closed = True
        ex, self._exchange = self._exchange, None
        if ex is not None:
            ex.abort()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def on_client_pause_writing(self) -> None:
        if self._exchange is not None:
            self._exchange.pause_reading()

    def on_client_resume_writing(self) -> None:
        if self._exchange is not None:
            self._exchange.resume_reading()

    # -- origin side (ResponseHandler) -------------------------------------------------------

    def on_response_head(self, status: int, reason: str, headers: hdr.Headers) -> None:
        if self._closed:
            return
        self.app.metrics.observe_origin_latency(self.app.loop.time() - self._t0)
        self._resp_code = status
        self._resp_reason = reason
        self._resp_headers = headers
        if not self.route.no_grip and not self.trusted and is_grip_response(headers):
            self._mode = "grip"
            return
        self._mode = "pass"
        self._start_pass()

    def on_response_body(self, data: bytes) -> None:
        if self._closed or not data:
            return
        if self._mode == "pass":
            self._pass_bytes += len(data)
            self.conn.write(encode_chunk(data) if self._chunked else data)
        elif self._jstream is not None:
            out = self._jstream.feed(data)
            if out:
                self._pass_bytes += len(out)
                self.conn.write(encode_chunk(out) if self._chunked else out)
        elif self._mode == "jsonp":
            self._grip_size += len(data)
            self._grip_buf.append(data)
            if self._grip_size > self.app.config.max_request_body:
                self._fail("JSON-P response too large")
        elif self._through is not None:
            self.conn.write(encode_chunk(data) if self._chunked else data)
        else:
            self._grip_size += len(data)
            self._grip_buf.append(data)
            if self._grip_size > MAX_BUFFERED:
                self._grip_too_large()

    def on_response_end(self) -> None:
        self._release()
        if self._closed:
            return
        self._exchange = None
        if self._mode == "pass":
            if self._chunked:
                self.conn.write(LAST_CHUNK)
            self._log(f"code={self._resp_code} {self._pass_bytes}")
            self._stats_end()
            self.conn.finish_response(self._keep_alive)
        elif self._jstream is not None:
            end = self._jstream.finish()
            self._pass_bytes += len(end)
            self.conn.write(encode_chunk(end) + LAST_CHUNK if self._chunked else end)
            self._log(f"code={self._resp_code} {self._pass_bytes}")
            self._stats_end()
            self.conn.finish_response(self._keep_alive)
        elif self._mode == "jsonp" and self.req.jsonp is not None:
            resp = HttpResponse(
                self._resp_code, self._resp_reason, self._resp_headers, b"".join(self._grip_buf)
            )
            self._grip_buf = []
            self._log(f"code={resp.code} {len(resp.body)}")
            self._stats_end()
            self.conn.send_response(wrap_response(resp, self.req.jsonp), self.req.method)
        elif self._through is not None:
            self._log("accept")
            self.app.engine.start_stream(
                self.conn, self.req, self.route, self._through, self._chunked, head_sent=True
            )
        elif self._mode == "grip":
            body = b"".join(self._grip_buf)
            self._grip_buf = []
            self._apply_grip(self._resp_code, self._resp_reason, self._resp_headers, body)

    def on_error(self, exc: OriginError) -> None:
        if self._closed:
            return
        self._exchange = None
        if self._started:
            log.info("%s: origin failed mid-response: %s", self._describe(), exc)
            self.conn.abort()
            return
        self._fail(f"Error while proxying to origin: {exc}")

    # -- pass-through ------------------------------------------------------------------------

    def _start_pass(self) -> None:
        req = self.req
        code = self._resp_code
        if req.jsonp is not None:
            # F46: a response whose (small) body is known up front is wrapped whole, as Pushpin
            # does when the body is complete at the start; any other is wrapped as it streams.
            cl = (hdr.get(self._resp_headers, "content-length") or "").strip()
            if not body_allowed(code, req.method) or (cl.isdigit() and int(cl) <= MAX_BUFFERED):
                self._mode = "jsonp"
            else:
                self._start_jsonp_stream(req.jsonp)
            return
        headers = [(k, v) for k, v in self._resp_headers if k.lower() not in _STRIP_PASS_RESPONSE]
        if self.app.aco(self.route):
            headers = apply_cors(req.headers, headers)  # F45
        keep_alive = req.keep_alive
        if body_allowed(code, req.method) and not hdr.contains(headers, "content-length"):
            if req.http_version == "1.1":
                headers.append(("Transfer-Encoding", "chunked"))
                self._chunked = True
            else:
                keep_alive = False  # HTTP/1.0 client: the body ends when we close (F48)
        if not keep_alive:
            headers.append(("Connection", "close"))
        elif req.http_version == "1.0":
            headers.append(("Connection", "keep-alive"))
        self._keep_alive = keep_alive
        self._started = True
        # Queued, not written: the first body bytes (usually from the same read) go out with it
        # in one send (``write`` joins what is queued).
        self.conn.queue(encode_head(code, self._resp_reason or reason_phrase(code), headers))

    def _start_jsonp_stream(self, jr: JsonpRequest) -> None:
        """F46: ``200 OK`` ``application/javascript``, chunked (Pushpin's head, no
        Cache-Control [verified]), then the wrapper's opening; the body follows as it comes."""
        js = JsonpStream(jr)
        head, start = js.start(self._resp_code, self._resp_reason, self._resp_headers)
        headers = list(head.headers)
        self._chunked = self.req.http_version == "1.1"
        if self._chunked:
            headers += [("Connection", "Transfer-Encoding"), ("Transfer-Encoding", "chunked")]
        else:
            headers.append(("Connection", "close"))  # HTTP/1.0: the body ends when we close
            self._keep_alive = False
        self._mode = "jsonp-stream"
        self._jstream = js
        self._started = True
        self._pass_bytes = len(start)
        self.conn.write(
            encode_head(200, "OK", headers) + (encode_chunk(start) if self._chunked else start)
        )

    # -- GRIP --------------------------------------------------------------------------------

    def _instruct(self, code: int, reason: str, headers: hdr.Headers, body: bytes) -> Instruct:
        return parse_instruct(
            code,
            reason,
            headers,
            body,
            channel_prefix=self.route.prefix,
            connection_subscription_max=self.app.config.connection_subscription_max,
            wildcard=self.app.config.wildcard_channels,
        )

    def _grip_too_large(self) -> None:
        """F19: an oversized stream hold streams its initial body through; else 502."""
        headers = self._resp_headers
        ctype = (hdr.get(headers, "content-type") or "").split(";")[0].strip().lower()
        hold = (hdr.get(headers, "grip-hold") or "").strip()
        if hold == "stream" and ctype != "application/grip-instruct":
            try:
                ins = self._instruct(self._resp_code, self._resp_reason, headers, b"")
            except InstructError as e:
                self._fail(f"Failed to parse accept instructions: {e}")
                return
            if self._body_over:
                self._fail_client(400, "Request too large to accept GRIP instruct.\n")
                return
            self._through = ins
            self._chunked = self.req.http_version == "1.1"
            self.app.engine.write_stream_head(self.conn, ins.response, self._chunked)
            self._started = True
            data = b"".join(self._grip_buf)
            self._grip_buf = []
            self.conn.write(encode_chunk(data) if self._chunked else data)
            return
        self._fail(f"GRIP instruct response too large from {self.target_label}")

    def _apply_grip(self, code: int, reason: str, headers: hdr.Headers, body: bytes) -> None:
        try:
            ins = self._instruct(code, reason, headers, body)
        except InstructError as e:
            self._fail(f"Failed to parse accept instructions: {e}")
            return
        for w in ins.warnings:
            log.warning("%s: %s", self._describe(), w)
        if ins.hold_mode is not None:
            # F11 target option sub=: implicit channels (no route prefix) on every hold.
            have = {c.name for c in ins.channels}
            for t in self.route.targets:
                if t.label() == self.target_label:
                    ins.channels.extend(Channel(ch) for ch in t.subs if ch not in have)
                    break
        if ins.hold_mode is not None and self._body_over:
            self._fail_client(400, "Request too large to accept GRIP instruct.\n")
            return
        # A stream that errors still starts: Pushpin sends the head and initial body, then
        # ends the stream (with the message on debug routes, F47).
        stream_error = ""
        if ins.hold_mode == "stream" and ins.next_link is None:
            n = len(self.route.prefix)
            for c in ins.channels:
                if c.prev_id is not None:  # F26: reliable streams need a next link
                    stream_error = (
                        f"channel '{c.name[n:]}' specifies prev-id, but no next link found"
                    )
                    break
        if any(c.filters for c in ins.channels) and (ins.response.body or not ins.hold_mode):
            try:  # F35: build-id applies to the initial response body too
                ins.response.body = process_initial_body(
                    [c.filters for c in ins.channels], ins.meta, ins.response.body
                )
            except FilterError as e:
                if ins.hold_mode != "stream":
                    self._fail(str(e))
                    return
                stream_error = stream_error or str(e)
                ins.response.body = b""
        if self.app.aco(self.route) and ins.hold_mode != "response":
            # F45. A held response is decorated when it is answered (its timeout, or a publish
            # merged into it), so the published headers are listed in Expose-Headers.
            ins.response.headers = apply_cors(self.req.headers, ins.response.headers)
        self._log("accept")
        holds = self.app.engine
        chunked = self.req.http_version == "1.1"
        if ins.hold_mode == "response":
            holds.start_response(
                self.conn, self.req, self.route, ins, self._body_buf, retry=self.retry
            )
        elif ins.hold_mode == "stream":
            hold = holds.start_stream(
                self.conn, self.req, self.route, ins, chunked, retry=self.retry
            )
            if stream_error:
                hold.fail(stream_error)
        elif ins.next_link is not None:
            # F25: no hold but a next link: the response stays open and the link is followed.
            holds.start_stream(self.conn, self.req, self.route, ins, chunked, follow=True)
        else:
            self._stats_end()
            self.conn.send_response(ins.response, self.req.method)

    # -- test target (F50) -------------------------------------------------------------------

    def _answer_test(self) -> None:
        if self._closed or self._mode:
            return
        self._release()
        self._mode = "test"
        self.target_label = "test"
        path = test_target_path(self.route, origin_form(self.req.url))
        resp = answer_test_request(path, self._body_total)
        if is_grip_response(resp.headers):
            self._apply_grip(resp.code, resp.reason, resp.headers, resp.body)
        else:
            self._log(f"code={resp.code} {len(resp.body)}")
            if self.req.jsonp is not None:
                resp = wrap_response(resp, self.req.jsonp)  # F46
            elif self.app.aco(self.route):
                resp.headers = apply_cors(self.req.headers, resp.headers)  # F45
            self._stats_end()
            self.conn.send_response(resp, self.req.method)

    # -- errors ------------------------------------------------------------------------------

    def _fail(self, detail: str) -> None:
        """Answer 502 (F47): the detail only on debug routes."""
        debug = self.route.debug or self.app.config.debug
        body = (detail if debug else "Error while proxying to origin.") + "\n"
        log.info("conn %s route %s: %s: %s", self.conn.id, self.route.id, self._describe(), detail)
        self._fail_client(502, body)

    def _fail_client(self, code: int, body: str) -> None:
        self._release()
        ex, self._exchange = self._exchange, None
        if ex is not None:
            ex.abort()
        if self._closed:
            return
        self._log(f"code={code} {len(body)}")
        self._stats_end()
        if self._started:
            self.conn.abort()
            return
        self._closed = True
        resp = own_response(self.req, text_response(code, body), self.app.aco(self.route))
        self.conn.send_response(resp, self.req.method)

    # -- stats (F43) -------------------------------------------------------------------------

    def _stats_end(self) -> None:
        """The response is complete: the request's stats connection ends (before the next
        pipelined request starts)."""
        if requests_observed(self.app.config):
            self.app.engine.events.request_ended(self.conn.id)

    # -- logging (F53) -----------------------------------------------------------------------

    def _describe(self) -> str:
        host = hdr.get(self.req.headers, "host") or ""
        return f"{self.req.method} http://{host}{self.req.url}"

    def _log(self, what: str) -> None:
        """Pushpin's request log line (F53, logutil.cpp ``logRequest``)."""
        ticklog = self.app.ticklog
        if not ticklog.enabled():
            return
        cfg = self.app.config
        line = request_log_line(
            self._describe(),
            self.target_label or self.route.targets[0].label(),
            self.req.headers,
            self.route,
            what + " retry" if self.retry else what,
            peer=self.conn.peer if cfg.log_from else None,
            user_agent=cfg.log_user_agent,
            trailer=[f"#{ch}={lid}" for ch, lid in self.last_ids] if self.last_ids else (),
        )
        ticklog.info(line)


def own_response(req: Request, resp: HttpResponse, aco: bool) -> HttpResponse:
    """A response gripd makes itself (errors, ``Pushpin-Check``) as Pushpin sends it: JSON-P
    wrapped when the request used JSON-P (F46), else CORS-decorated when ``aco`` (F45).

    Pushpin's own answers carry ``Content-Length`` among their headers, and the extended JSON-P
    wrapper lists it, so it is added here before wrapping [verified against Pushpin 1.36]."""
    if req.jsonp is not None:
        if not hdr.contains(resp.headers, "content-length"):
            resp.headers = [*resp.headers, ("Content-Length", str(len(resp.body)))]
        return wrap_response(resp, req.jsonp)
    if aco:
        resp.headers = apply_cors(req.headers, resp.headers)
    return resp


def _has_body(req: Request) -> bool:
    return hdr.contains(req.headers, "content-length") or hdr.contains(
        req.headers, "transfer-encoding"
    )


def request_stats_started(
    app: OriginContext,
    events: Events,
    conn: ClientConn,
    req: Request,
    route: Route,
    trusted: bool,
    transport: Transport = "http",
) -> None:
    """A request begins to be served: Pushpin's stats count it as a connection, with the
    route's id, the logical client address (X-Forwarded-For, F16) and whether it came over
    TLS. Nothing is done when neither the stats socket nor Prometheus reads it."""
    if not requests_observed(app.config):
        return
    peer = logical_client_address(req.headers, conn.peer, app.forward, trusted)
    events.request_started(
        conn.id, peer, transport, route.stats_route, app.client_tls(req.headers, req.tls)
    )
