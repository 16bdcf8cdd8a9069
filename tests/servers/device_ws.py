"""A signaling server for the WebSocket device/viewer protocol (seed 002), as a test fixture.

Written from the protocol's specification ("WebSocket Protocol": endpoints
`/ws/device` and `/ws/viewer`, JSON messages `{type, request_id?, ts, payload}`),
not from the doorbell's client, so that the client is tested against a server
that behaves the way the specification says the real one does.

What it implements, section by section of the specification:

- Message Format: every message sent has `type`, `ts` (ISO 8601 UTC with
  milliseconds and `Z`) and `payload`, plus `request_id` when it answers a
  message that had one. Every message received is validated (a JSON object,
  string `type` and `ts`, object `payload`, string `request_id` if present);
  a bad one gets `error` "Invalid message" and the connection stays.
- Device Messages: `hello` (unknown device: close 1008), `heartbeat`,
  `device_presence` (merged and kept per device), `signal_answer` and
  `signal_ice` (relayed to the session's viewer), `watch_request` and
  `watch_ended` sent to the device.
- Viewer Messages: `hello` with a token (invalid: close 1008), `heartbeat`,
  `watch_request` (`watch_ready` or `error` "Device not found" / "Device is
  offline"), `signal_offer` and `signal_ice` (relayed to the device),
  `end_watch`.
- Example Flows: a device that disconnects ends its sessions with
  `watch_ended` "device_disconnected" to each viewer; a viewer that
  disconnects ends its sessions with "viewer_disconnected" to the device.
- Best Practices / Server: validation, per-connection rate limit, heartbeat
  timeout for devices.

Choices where the specification is silent are listed in tests/servers/README.md.

The protocol rules live in `Hub`, which does no IO and reads no clock: each
input (a connection opened, a text frame, a close, a clock tick, a test hook)
goes in with `now`, and the actions to carry out (`Send`, `Close`) come out.
The aiohttp layer at the bottom owns the sockets and carries them out.

Usage:
  python tests/servers/device_ws.py [--host 127.0.0.1] [--port 0]
      [--device ID]... [--token TOKEN:USER_ID]... [--ice-url URL]...
      [--turn-secret SECRET] [--turn-ttl SECONDS] [--heartbeat-timeout SECONDS]
      [--rate N] [--static DIR] [--tls CERT KEY] [--verbose]

stdout gets exactly one line, flushed, once the socket is bound:
  listening on PORT
everything else (logs) goes to stderr. Exits with status 0 on SIGTERM/SIGINT.
"""
import argparse
import asyncio
import base64
import collections
import dataclasses
import datetime
import hashlib
import hmac
import json
import logging
import os
import signal
import ssl
import sys
import time
import uuid
from typing import Callable, NamedTuple, Optional

from aiohttp import WSMsgType, web

HERE = os.path.dirname(os.path.abspath(__file__))
PAGE = os.path.join(HERE, "page", "device_ws.html")

log = logging.getLogger("device_ws")

# Close codes of the specification's "Connection Close Codes" table.
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008

# After this many "Rate limit exceeded" errors a connection is closed (1008).
RATE_STRIKES = 3


# ---------------------------------------------------------------------------
# Pure helpers: timestamps and ICE servers.
# ---------------------------------------------------------------------------


def iso_ms(now: float) -> str:
    """`now` (Unix seconds) as the specification's `ts`: 2025-01-01T12:34:56.789Z."""
    t = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def turn_credentials(secret: str, who: str, now: float, ttl: int) -> tuple[str, str]:
    """Time-limited TURN credentials as coturn's `use-auth-secret` checks them
    (the "TURN REST API"): username `<expiry unix>:<who>`, credential
    base64(HMAC-SHA1(secret, username))."""
    username = f"{int(now) + ttl}:{who}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers(urls: list[str], secret: Optional[str], who: str, now: float, ttl: int) -> list[dict]:
    """The `ice_servers` list of `watch_request` / `watch_ready`.

    Every non-TURN URL is an entry of its own (`{"urls": "stun:..."}`); the
    TURN URLs (turn:, turns:) share one entry, at the place of the first one,
    which carries credentials for `who` when a TURN secret is configured; the
    specification's example has this shape.
    """
    entries: list[dict] = []
    turn: Optional[dict] = None
    for url in urls:
        if not url.startswith(("turn:", "turns:")):
            entries.append({"urls": url})
            continue
        if turn is None:
            turn = {"urls": []}
            if secret is not None:
                username, credential = turn_credentials(secret, who, now, ttl)
                turn.update(username=username, credential=credential, credentialType="password")
            entries.append(turn)
        turn["urls"].append(url)
    return entries


def message(kind: str, payload: dict, now: float, request_id: Optional[str] = None) -> dict:
    """A message in the specification's format, keys in its order."""
    msg: dict = {"type": kind}
    if request_id is not None:
        msg["request_id"] = request_id
    msg["ts"] = iso_ms(now)
    msg["payload"] = payload
    return msg


def parse(text: str) -> Optional[dict]:
    """The message in `text` if it has the specification's shape, else None.

    "Fields": `type` (string, required), `request_id` (string, optional),
    `ts` (string, required), `payload` (object, required).
    """
    try:
        msg = json.loads(text)
    except ValueError:
        return None
    if not isinstance(msg, dict):
        return None
    if not isinstance(msg.get("type"), str) or not isinstance(msg.get("ts"), str):
        return None
    if not isinstance(msg.get("payload"), dict):
        return None
    if "request_id" in msg and not isinstance(msg["request_id"], str):
        return None
    return msg


def request_id_of(text: str) -> Optional[str]:
    """The string `request_id` of a frame, if it has one, even when the rest is invalid."""
    try:
        msg = json.loads(text)
    except ValueError:
        return None
    rid = msg.get("request_id") if isinstance(msg, dict) else None
    return rid if isinstance(rid, str) else None


# ---------------------------------------------------------------------------
# The protocol rules (no IO).
# ---------------------------------------------------------------------------


class Conn:
    """One WebSocket connection as the hub sees it. Compared by identity."""

    def __init__(self, kind: str, now: float):
        self.kind = kind  # "device" or "viewer"
        self.ident: Optional[str] = None  # device_id or user_id once hello is accepted
        self.sessions: set[str] = set()
        self.last_seen = now  # for the device heartbeat timeout
        self.recent: collections.deque[float] = collections.deque()  # rate window
        self.strikes = 0  # "Rate limit exceeded" errors sent
        self.gone = False  # closed, or being closed by us: ignored from now on

    def __repr__(self):
        return f"<{self.kind} {self.ident or '(no hello)'}>"


class Send(NamedTuple):
    conn: Conn
    msg: dict


class Close(NamedTuple):
    conn: Conn
    code: int
    reason: str


@dataclasses.dataclass
class Session:
    """A watch session: one viewer watching one device."""

    id: str
    device_id: str
    device: Conn
    viewer: Conn


@dataclasses.dataclass
class DeviceRecord:
    """What the server knows of a configured device (also what the test hook reports)."""

    conn: Optional[Conn] = None
    presence: dict = dataclasses.field(default_factory=dict)
    hellos: int = 0
    heartbeats: int = 0
    messages: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Config:
    devices: list[str]
    tokens: dict[str, str]  # token -> user_id
    ice_urls: list[str] = dataclasses.field(default_factory=list)
    turn_secret: Optional[str] = None
    turn_ttl: int = 86400
    heartbeat_timeout: float = 90.0
    rate: int = 50


class Hub:
    """The server's state and rules. Every method takes `now` (Unix seconds)
    and returns the actions to carry out, in order."""

    def __init__(self, config: Config, new_id: Callable[[], str] = lambda: str(uuid.uuid4())):
        self.config = config
        self.new_id = new_id
        self.devices = {d: DeviceRecord() for d in config.devices}
        self.sessions: dict[str, Session] = {}

    # -- connection lifecycle ------------------------------------------------

    def open(self, kind: str, now: float) -> Conn:
        return Conn(kind, now)

    def closed(self, conn: Conn, now: float) -> list:
        """The socket ended (either side closed it)."""
        if conn.gone:
            return []
        return self._drop(conn, now)

    def tick(self, now: float) -> list:
        """Best Practices / Server: drop devices silent for `heartbeat_timeout` (close 1001)."""
        actions = []
        for record in self.devices.values():
            conn = record.conn
            if conn is not None and now - conn.last_seen >= self.config.heartbeat_timeout:
                log.info("%r silent for %.0f s: dropped", conn, now - conn.last_seen)
                actions += self._close(conn, CLOSE_GOING_AWAY, "Heartbeat timeout", now)
        return actions

    def close_device(self, device_id: str, code: int, reason: str, now: float) -> Optional[list]:
        """Test hook: close a device's socket with `code`; None if it is not connected."""
        record = self.devices.get(device_id)
        if record is None or record.conn is None:
            return None
        return self._close(record.conn, code, reason, now)

    def device_report(self, device_id: str) -> Optional[dict]:
        """Test hook: what the server knows of a device; None for an unknown one."""
        record = self.devices.get(device_id)
        if record is None:
            return None
        return {
            "online": record.conn is not None,
            "presence": record.presence,
            "hellos": record.hellos,
            "heartbeats": record.heartbeats,
            "messages": list(record.messages),
        }

    # -- a text frame --------------------------------------------------------

    def receive(self, conn: Conn, text: str, now: float) -> list:
        """Message Format + Best Practices / Server: rate limit, validate, dispatch."""
        if conn.gone:
            return []
        conn.last_seen = now
        if not self._within_rate(conn, now):
            conn.strikes += 1
            actions = [Send(conn, message("error", {"message": "Rate limit exceeded"}, now, request_id_of(text)))]
            if conn.strikes >= RATE_STRIKES:
                actions += self._close(conn, CLOSE_POLICY, "Rate limit exceeded", now)
            return actions
        msg = parse(text)
        if msg is None:
            return [Send(conn, message("error", {"message": "Invalid message"}, now, request_id_of(text)))]
        if conn.ident is None:
            if msg["type"] != "hello":
                # "Always send hello first": anything else is refused.
                return self._close(conn, CLOSE_POLICY, "Unauthorized", now)
            if conn.kind == "device":
                return self._device_hello(conn, msg, now)
            return self._viewer_hello(conn, msg, now)
        if conn.kind == "device":
            self.devices[conn.ident].messages.append(msg["type"])
            handlers = self.DEVICE_HANDLERS
        else:
            handlers = self.VIEWER_HANDLERS
        handler = handlers.get(msg["type"])
        if handler is None:
            return [self._error(conn, msg, f"Unknown message type: {msg['type']}", now)]
        return handler(self, conn, msg, now)

    def _within_rate(self, conn: Conn, now: float) -> bool:
        """At most `rate` messages in any one second; refused ones do not count."""
        while conn.recent and now - conn.recent[0] >= 1.0:
            conn.recent.popleft()
        if len(conn.recent) >= self.config.rate:
            return False
        conn.recent.append(now)
        return True

    # -- Device Messages -----------------------------------------------------

    def _device_hello(self, conn: Conn, msg: dict, now: float) -> list:
        """Device Messages / Connection / Hello: a known device_id gets hello_ack,
        any other closes the connection with 1008. A second connection of the
        same device replaces the first, which is closed with 1001."""
        device_id = msg["payload"].get("device_id")
        record = self.devices.get(device_id) if isinstance(device_id, str) else None
        if record is None:
            log.info("hello from unknown device %r: closing", device_id)
            return self._close(conn, CLOSE_POLICY, "Device not found", now)
        actions = []
        if record.conn is not None:
            log.info("device %s connected again: replacing the old connection", device_id)
            actions += self._close(record.conn, CLOSE_GOING_AWAY, "Replaced by a new connection", now)
        conn.ident = device_id
        record.conn = conn
        record.hellos += 1
        record.messages.append("hello")
        ack = {"device_id": device_id, "server_time": iso_ms(now)}
        actions.append(Send(conn, message("hello_ack", ack, now, msg.get("request_id"))))
        return actions

    def _heartbeat(self, conn: Conn, msg: dict, now: float) -> list:
        """Device (and Viewer) Messages / Heartbeat: answered with heartbeat_ack."""
        if conn.kind == "device":
            self.devices[conn.ident].heartbeats += 1
        return [Send(conn, message("heartbeat_ack", {}, now, msg.get("request_id")))]

    def _device_presence(self, conn: Conn, msg: dict, now: float) -> list:
        """Device Messages / Presence: merged into what is kept for the device; no answer."""
        self.devices[conn.ident].presence.update(msg["payload"])
        return []

    def _signal_answer(self, conn: Conn, msg: dict, now: float) -> list:
        """Device Messages / Signal Answer: relayed to the session's viewer."""
        session, error = self._own_session(conn, msg, now)
        if error:
            return [error]
        sdp = msg["payload"].get("sdp")
        if not isinstance(sdp, dict):
            return [self._error(conn, msg, "Invalid message", now)]
        payload = {"session_id": session.id, "sdp": sdp}
        return [Send(session.viewer, message("signal_answer", payload, now))]

    def _signal_ice(self, conn: Conn, msg: dict, now: float) -> list:
        """Signal ICE (both directions): `candidate` (an object, or null for the
        end of candidates) relayed to the other side of the session."""
        session, error = self._own_session(conn, msg, now)
        if error:
            return [error]
        payload = msg["payload"]
        if "candidate" not in payload or not isinstance(payload["candidate"], (dict, type(None))):
            return [self._error(conn, msg, "Invalid message", now)]
        other = session.viewer if conn.kind == "device" else session.device
        relayed = {"session_id": session.id, "candidate": payload["candidate"]}
        return [Send(other, message("signal_ice", relayed, now))]

    def _hello_again(self, conn: Conn, msg: dict, now: float) -> list:
        """A hello on a connection that already said hello (not specified):
        the same identity is acknowledged again, another one is refused with
        an error "Unauthorized" (the connection stays as it was)."""
        payload = msg["payload"]
        if conn.kind == "device":
            same = payload.get("device_id") == conn.ident
        else:
            token = payload.get("token")
            same = isinstance(token, str) and self.config.tokens.get(token) == conn.ident
        if not same:
            return [self._error(conn, msg, "Unauthorized", now)]
        if conn.kind == "device":
            self.devices[conn.ident].hellos += 1
            ack = {"device_id": conn.ident, "server_time": iso_ms(now)}
        else:
            ack = {"user_id": conn.ident, "server_time": iso_ms(now)}
        return [Send(conn, message("hello_ack", ack, now, msg.get("request_id")))]

    # -- Viewer Messages -----------------------------------------------------

    def _viewer_hello(self, conn: Conn, msg: dict, now: float) -> list:
        """Viewer Messages / Connection / Hello: a valid token gets hello_ack with
        its user_id, any other closes the connection with 1008."""
        token = msg["payload"].get("token")
        user_id = self.config.tokens.get(token) if isinstance(token, str) else None
        if user_id is None:
            log.info("viewer hello with an invalid token: closing")
            return self._close(conn, CLOSE_POLICY, "Invalid token", now)
        conn.ident = user_id
        ack = {"user_id": user_id, "server_time": iso_ms(now)}
        return [Send(conn, message("hello_ack", ack, now, msg.get("request_id")))]

    def _watch_request(self, conn: Conn, msg: dict, now: float) -> list:
        """Viewer Messages / Watch Session / Watch Request: a new session;
        watch_ready to the viewer, then watch_request to the device, each with
        its own ICE servers. Errors "Device not found", "Device is offline"."""
        device_id = msg["payload"].get("device_id")
        if not isinstance(device_id, str):
            return [self._error(conn, msg, "Invalid message", now)]
        record = self.devices.get(device_id)
        if record is None:
            return [self._error(conn, msg, "Device not found", now)]
        if record.conn is None:
            return [self._error(conn, msg, "Device is offline", now)]
        session = Session(self.new_id(), device_id, record.conn, conn)
        self.sessions[session.id] = session
        conn.sessions.add(session.id)
        record.conn.sessions.add(session.id)
        log.info("session %s: viewer %s watches %s", session.id, conn.ident, device_id)
        short = session.id[:8]
        cfg = self.config
        ready = {
            "session_id": session.id,
            "ice_servers": ice_servers(cfg.ice_urls, cfg.turn_secret, f"viewer_{conn.ident}_{short}", now, cfg.turn_ttl),
        }
        request = {
            "session_id": session.id,
            "user_id": conn.ident,
            "ice_servers": ice_servers(cfg.ice_urls, cfg.turn_secret, f"device_{short}", now, cfg.turn_ttl),
        }
        return [
            Send(conn, message("watch_ready", ready, now, msg.get("request_id"))),
            Send(record.conn, message("watch_request", request, now)),
        ]

    def _signal_offer(self, conn: Conn, msg: dict, now: float) -> list:
        """Viewer Messages / Signal Offer: relayed to the session's device."""
        session, error = self._own_session(conn, msg, now)
        if error:
            return [error]
        sdp = msg["payload"].get("sdp")
        if not isinstance(sdp, dict):
            return [self._error(conn, msg, "Invalid message", now)]
        payload = {"session_id": session.id, "sdp": sdp}
        return [Send(session.device, message("signal_offer", payload, now))]

    def _end_watch(self, conn: Conn, msg: dict, now: float) -> list:
        """Viewer Messages / End Watch: the session ends; the device gets
        watch_ended "user_ended". The viewer gets no answer (none is specified)."""
        session, error = self._own_session(conn, msg, now)
        if error:
            return [error]
        return self._end(session, "user_ended", now)

    DEVICE_HANDLERS = {
        "hello": _hello_again,
        "heartbeat": _heartbeat,
        "device_presence": _device_presence,
        "signal_answer": _signal_answer,
        "signal_ice": _signal_ice,
    }
    VIEWER_HANDLERS = {
        "hello": _hello_again,
        "heartbeat": _heartbeat,
        "watch_request": _watch_request,
        "signal_offer": _signal_offer,
        "signal_ice": _signal_ice,
        "end_watch": _end_watch,
    }

    # -- shared --------------------------------------------------------------

    def _error(self, conn: Conn, msg: dict, text: str, now: float) -> Send:
        """Error Messages / Generic Error, answering `msg`."""
        return Send(conn, message("error", {"message": text}, now, msg.get("request_id")))

    def _own_session(self, conn: Conn, msg: dict, now: float):
        """The session named by the payload's session_id if `conn` is part of
        it, else an error "Session not found" to send."""
        session = self.sessions.get(msg["payload"].get("session_id"))
        if session is None or conn not in (session.device, session.viewer):
            return None, self._error(conn, msg, "Session not found", now)
        return session, None

    def _end(self, session: Session, reason: str, now: float) -> list:
        """End a session, telling the side that did not end it (Watch Ended)."""
        del self.sessions[session.id]
        session.device.sessions.discard(session.id)
        session.viewer.sessions.discard(session.id)
        log.info("session %s ended: %s", session.id, reason)
        to = session.viewer if reason == "device_disconnected" else session.device
        ended = {"session_id": session.id, "reason": reason}
        return [Send(to, message("watch_ended", ended, now))]

    def _close(self, conn: Conn, code: int, reason: str, now: float) -> list:
        """Close a connection and forget it at once (its sessions end now, not
        when the close handshake completes)."""
        return self._drop(conn, now) + [Close(conn, code, reason)]

    def _drop(self, conn: Conn, now: float) -> list:
        """Forget a connection. Example Flows / Device Disconnect During Session:
        its viewers get watch_ended "device_disconnected"; a viewer's devices
        get "viewer_disconnected"."""
        conn.gone = True
        actions = []
        if conn.kind == "device":
            record = self.devices.get(conn.ident)
            if record is not None and record.conn is conn:
                record.conn = None
            reason = "device_disconnected"
        else:
            reason = "viewer_disconnected"
        for session_id in sorted(conn.sessions):
            actions += self._end(self.sessions[session_id], reason, now)
        return actions


# ---------------------------------------------------------------------------
# IO: aiohttp. One reader loop per socket feeds the hub; one writer task per
# socket sends what the hub decided, in order.
# ---------------------------------------------------------------------------


class Link:
    """A socket's outbox and the task that drains it."""

    def __init__(self, ws: web.WebSocketResponse):
        self.ws = ws
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.task = asyncio.create_task(self._write())

    async def _write(self):
        while True:
            item = await self.outbox.get()
            if item is None:
                return
            try:
                if isinstance(item, Close):
                    await self.ws.close(code=item.code, message=item.reason.encode())
                    return
                await self.ws.send_str(json.dumps(item))
            except (ConnectionError, RuntimeError) as e:
                log.debug("send failed: %s", e)
                return


class Server:
    """The aiohttp side: routes, sockets, and the test hooks."""

    def __init__(self, hub: Hub, static: Optional[str]):
        self.hub = hub
        self.links: dict[Conn, Link] = {}
        self.refuse_devices_until = 0.0  # loop time; see stop_accepting
        self.app = web.Application()
        self.app.add_routes(
            [
                web.get("/ws/device", self.ws_device),
                web.get("/ws/viewer", self.ws_viewer),
                web.get("/watch/{device_id}", self.watch_page),
                web.get("/test/devices/{device_id}", self.test_device),
                web.post("/test/close-device/{device_id}", self.test_close_device),
                web.post("/test/stop-accepting", self.test_stop_accepting),
            ]
        )
        if static:
            self.app.router.add_static("/static/", static)
        self.app.on_startup.append(self._start_ticker)
        self.app.on_shutdown.append(self._shutdown)

    def carry_out(self, actions: list):
        for action in actions:
            link = self.links.get(action.conn)
            if link is None:
                continue
            if isinstance(action, Send):
                log.debug("-> %r %s", action.conn, action.msg["type"])
                link.outbox.put_nowait(action.msg)
            else:
                log.debug("close %r %d %s", action.conn, action.code, action.reason)
                link.outbox.put_nowait(action)

    async def ws_device(self, request: web.Request):
        """Endpoints: Device WebSocket."""
        if asyncio.get_running_loop().time() < self.refuse_devices_until:
            return web.json_response({"message": "Not accepting devices"}, status=503)
        return await self._serve(request, "device")

    async def ws_viewer(self, request: web.Request):
        """Endpoints: Viewer WebSocket."""
        return await self._serve(request, "viewer")

    async def _serve(self, request: web.Request, kind: str):
        ws = web.WebSocketResponse(autoping=True, heartbeat=None)
        await ws.prepare(request)
        conn = self.hub.open(kind, time.time())
        link = self.links[conn] = Link(ws)
        log.info("%s connected from %s", kind, request.remote)
        try:
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    self.carry_out(self.hub.receive(conn, frame.data, time.time()))
                elif frame.type == WSMsgType.BINARY:
                    # Not JSON text: the same answer as any invalid message.
                    self.carry_out(self.hub.receive(conn, "", time.time()))
        finally:
            self.carry_out(self.hub.closed(conn, time.time()))
            log.info("%r disconnected", conn)
            link.outbox.put_nowait(None)
            await link.task
            del self.links[conn]
        return ws

    async def watch_page(self, request: web.Request):
        """The viewer page (tests/servers/page/device_ws.html); not part of the protocol."""
        return web.FileResponse(PAGE, headers={"Cache-Control": "no-store"})

    # -- test hooks (for tests only; not in the specification) ---------------

    async def test_device(self, request: web.Request):
        """GET /test/devices/ID: {online, presence, hellos, heartbeats, messages}."""
        report = self.hub.device_report(request.match_info["device_id"])
        if report is None:
            return web.json_response({"message": "Device not found"}, status=404)
        return web.json_response(report)

    async def test_close_device(self, request: web.Request):
        """POST /test/close-device/ID?code=N[&reason=TEXT]: close that device's socket with code N."""
        try:
            code = int(request.query.get("code", CLOSE_GOING_AWAY))
        except ValueError:
            return web.json_response({"message": "Invalid code"}, status=400)
        reason = request.query.get("reason", "Closed by test")
        actions = self.hub.close_device(request.match_info["device_id"], code, reason, time.time())
        if actions is None:
            return web.json_response({"message": "Device is offline"}, status=404)
        self.carry_out(actions)
        return web.json_response({"message": "Closing", "code": code})

    async def test_stop_accepting(self, request: web.Request):
        """POST /test/stop-accepting?seconds=S: device upgrades get HTTP 503 for S seconds."""
        try:
            seconds = float(request.query.get("seconds", "5"))
        except ValueError:
            return web.json_response({"message": "Invalid seconds"}, status=400)
        self.refuse_devices_until = asyncio.get_running_loop().time() + seconds
        return web.json_response({"message": "Refusing devices", "seconds": seconds})

    # -- background ----------------------------------------------------------

    async def _start_ticker(self, app):
        app["ticker"] = asyncio.create_task(self._tick())

    async def _tick(self):
        period = max(0.05, min(1.0, self.hub.config.heartbeat_timeout / 4))
        while True:
            await asyncio.sleep(period)
            self.carry_out(self.hub.tick(time.time()))

    async def _shutdown(self, app):
        app["ticker"].cancel()
        for conn in list(self.links):
            self.carry_out([Close(conn, CLOSE_GOING_AWAY, "Server shutting down")])


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: pick a free port (default)")
    p.add_argument("--device", action="append", default=[], metavar="ID", help="a known device id (repeatable)")
    p.add_argument(
        "--token", action="append", default=[], metavar="TOKEN:USER_ID", help="a valid viewer token (repeatable)"
    )
    p.add_argument("--ice-url", action="append", default=[], metavar="URL", help="an ICE server URL (repeatable)")
    p.add_argument("--turn-secret", help="coturn static-auth-secret: TURN entries get time-limited credentials")
    p.add_argument("--turn-ttl", type=int, default=86400, help="lifetime of TURN credentials in seconds")
    p.add_argument("--heartbeat-timeout", type=float, default=90.0, help="drop a device silent this long (1001)")
    p.add_argument("--rate", type=int, default=50, help="max messages per second per connection")
    p.add_argument("--static", metavar="DIR", help="serve DIR under /static/")
    p.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="serve HTTPS/WSS")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    for token in args.token:
        if ":" not in token:
            p.error(f"--token {token!r}: expected TOKEN:USER_ID")
    if args.rate < 1:
        p.error("--rate must be at least 1")
    return args


async def run(args: argparse.Namespace):
    config = Config(
        devices=args.device,
        tokens=dict(t.rsplit(":", 1) for t in args.token),
        ice_urls=args.ice_url,
        turn_secret=args.turn_secret,
        turn_ttl=args.turn_ttl,
        heartbeat_timeout=args.heartbeat_timeout,
        rate=args.rate,
    )
    server = Server(Hub(config), args.static)
    tls = None
    if args.tls:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(*args.tls)
    runner = web.AppRunner(server.app, access_log=log if args.verbose else None)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port, ssl_context=tls).start()
    print(f"listening on {runner.addresses[0][1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main():
    args = parse_args()
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="device_ws %(levelname)s %(message)s",
    )
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
