"""A signaling server for the SSE protocol (seed 004), as a test fixture.

Written from the protocol's description (the "using SSE" sequence diagram and
the API section), not from the doorbell's client, so that the client is
tested against a server that behaves the way the description says the real
one does:

- `GET /iceServers` -> `{urls: [...], username, credential}`.
- `POST /register/:sessionId/:peerId`: creates the session on first use, adds
  the peer, and sends `{type: "new-peer", senderId}` to the session's other
  peers; 200 `{"message": "Session registered successfully"}`.
- `GET /events/:sessionId/:peerId`: a `text/event-stream` of `data: <json>`
  events: `ping` `{time, type: "ping"}`, `new-peer`, and the relayed
  `{type, payload, senderId}`.
- `POST /message/:sessionId/:peerId` `{type, payload, target}`: forwards an
  offer, answer or ice-candidate to the target; 200 `{"message": "Message sent"}`.

Messages for a registered peer whose stream is not open are queued (at most
100, the oldest dropped) and delivered when it opens one: the diagram itself
needs this (new-peer and the offer may be sent before the other side has
opened its stream). This and the other choices where the description is
silent are listed in tests/servers/README.md.

The session rules live in `Relay`, which does no IO and reads no clock:
every message for a peer goes into that peer's queue, and the stream
handler (the only IO that reads a queue) takes messages off it once written.

Usage:
  python tests/servers/sse.py [--host 127.0.0.1] [--port 0] [--ice-url URL]...
      [--turn-secret SECRET] [--turn-ttl SECONDS] [--ping SECONDS]
      [--static DIR] [--tls CERT KEY] [--verbose]

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
import re
import signal
import ssl
import sys
import time
from typing import Optional

from aiohttp import web

HERE = os.path.dirname(os.path.abspath(__file__))
PAGE = os.path.join(HERE, "page", "sse.html")

log = logging.getLogger("sse")

# Session and peer ids: what a URL path segment can carry without escaping.
ID = re.compile(r"[A-Za-z0-9_-]{1,128}")

# Undelivered messages kept per peer; past this the oldest are dropped.
QUEUE_MAX = 100

# The message types POST /message forwards ("Can be used to forward offer, answer, ice-candidates").
RELAYED_TYPES = ("offer", "answer", "ice-candidate")

# The "stable who" in TURN usernames (the request names no peer).
TURN_WHO = "sse"


def iso_ms(now: float) -> str:
    """`now` (Unix seconds) as the ping's `time`: 2025-02-14T11:19:47.726Z."""
    t = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def ice_servers(urls: list[str], secret: Optional[str], now: float, ttl: int) -> dict:
    """API / GET /iceServers: `{urls, username, credential}`, the example's shape.

    With a TURN secret the credentials are coturn's `use-auth-secret` ones
    (username `<expiry unix>:<who>`, credential base64(HMAC-SHA1(secret,
    username))); without one both are empty strings.
    """
    if secret is None:
        return {"urls": list(urls), "username": "", "credential": ""}
    username = f"{int(now) + ttl}:{TURN_WHO}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return {"urls": list(urls), "username": username, "credential": base64.b64encode(digest).decode()}


# ---------------------------------------------------------------------------
# The session rules (no IO).
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Peer:
    queue: collections.deque = dataclasses.field(default_factory=lambda: collections.deque(maxlen=QUEUE_MAX))
    streams_opened: int = 0


@dataclasses.dataclass
class Session:
    peers: dict[str, Peer] = dataclasses.field(default_factory=dict)  # in registration order
    log: list[dict] = dataclasses.field(default_factory=list)  # {from, to, type} of every event queued


class Relay:
    """Sessions, their peers and the peers' queues. Methods that queue
    messages return the (session, peer) pairs whose queue grew, so the IO
    layer can wake their streams."""

    def __init__(self):
        self.sessions: dict[str, Session] = {}

    def peer(self, session_id: str, peer_id: str) -> Optional[Peer]:
        session = self.sessions.get(session_id)
        return session.peers.get(peer_id) if session else None

    def _deliver(self, session: Session, session_id: str, sender: str, target: str, event: dict):
        session.peers[target].queue.append(event)
        session.log.append({"from": sender, "to": target, "type": event["type"]})
        return (session_id, target)

    def register(self, session_id: str, peer_id: str) -> list:
        """API / POST /register: "a session is created for the first time and if
        for the same sessionId another peerId registers then that peerId is
        registered for this existing session"; new-peer goes to the others."""
        session = self.sessions.setdefault(session_id, Session())
        session.peers.setdefault(peer_id, Peer())
        event = {"type": "new-peer", "senderId": peer_id}
        return [
            self._deliver(session, session_id, peer_id, other, dict(event))
            for other in session.peers
            if other != peer_id
        ]

    def message(self, session_id: str, peer_id: str, body) -> tuple[int, dict, list]:
        """API / POST /message: forward {type, payload} to `target` as
        {type, payload, senderId}. Returns (HTTP status, JSON body, woken)."""
        if not isinstance(body, dict):
            return 400, {"message": "Body must be a JSON object"}, []
        kind = body.get("type")
        if kind not in RELAYED_TYPES:
            return 400, {"message": f"Invalid type: expected one of {', '.join(RELAYED_TYPES)}"}, []
        session = self.sessions.get(session_id)
        target = body.get("target")
        if session is None or not isinstance(target, str) or target not in session.peers:
            return 404, {"message": "Peer not found"}, []
        event = {"type": kind, "payload": body.get("payload"), "senderId": peer_id}
        woken = self._deliver(session, session_id, peer_id, target, event)
        return 200, {"message": "Message sent"}, [woken]

    def stream_opened(self, session_id: str, peer_id: str):
        self.sessions[session_id].peers[peer_id].streams_opened += 1

    def report(self, session_id: str) -> Optional[dict]:
        """Test hook: the session's peers, streams opened per peer, and the events queued."""
        session = self.sessions.get(session_id)
        if session is None:
            return None
        return {
            "peers": list(session.peers),
            "streams_opened": {p: peer.streams_opened for p, peer in session.peers.items()},
            "pending": {p: len(peer.queue) for p, peer in session.peers.items()},
            "messages": list(session.log),
        }


# ---------------------------------------------------------------------------
# IO: aiohttp.
# ---------------------------------------------------------------------------


class Stream:
    """One open GET /events response; `wake` is set when it has work."""

    def __init__(self):
        self.wake = asyncio.Event()
        self.replaced = False  # a newer stream of the same peer took over
        self.dropped = False  # the drop test hook: end abruptly


def sse_event(event: dict) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()


class Server:
    def __init__(
        self,
        relay: Relay,
        ice_urls: list[str],
        turn_secret: Optional[str],
        turn_ttl: int,
        ping: float,
        static: Optional[str] = None,
    ):
        self.relay = relay
        self.ice_urls = ice_urls
        self.turn_secret = turn_secret
        self.turn_ttl = turn_ttl
        self.ping = ping
        self.streams: dict[tuple[str, str], Stream] = {}
        self.app = web.Application()
        self.app.add_routes(
            [
                web.get("/", self.page),
                web.get("/iceServers", self.get_ice_servers),
                web.post("/register/{session}/{peer}", self.register),
                web.get("/events/{session}/{peer}", self.events),
                web.post("/message/{session}/{peer}", self.message),
                web.post("/test/drop/{session}/{peer}", self.test_drop),
                web.get("/test/sessions/{session}", self.test_session),
            ]
        )
        if static:
            self.app.router.add_static("/static/", static)
        self.app.on_shutdown.append(self._shutdown)

    def wake(self, pairs):
        for pair in pairs:
            stream = self.streams.get(pair)
            if stream is not None:
                stream.wake.set()

    @staticmethod
    def ids(request: web.Request) -> Optional[tuple[str, str]]:
        session, peer = request.match_info["session"], request.match_info["peer"]
        if ID.fullmatch(session) and ID.fullmatch(peer):
            return session, peer
        return None

    async def page(self, request: web.Request):
        """The viewer page (tests/servers/page/sse.html); not part of the protocol."""
        return web.FileResponse(PAGE, headers={"Cache-Control": "no-store"})

    async def get_ice_servers(self, request: web.Request):
        """API / GET /iceServers."""
        return web.json_response(ice_servers(self.ice_urls, self.turn_secret, time.time(), self.turn_ttl))

    async def register(self, request: web.Request):
        """API / POST /register/:sessionId/:peerId."""
        ids = self.ids(request)
        if ids is None:
            return web.json_response({"message": "Invalid sessionId or peerId"}, status=400)
        self.wake(self.relay.register(*ids))
        log.info("session %s: %s registered", *ids)
        return web.json_response({"message": "Session registered successfully"})

    async def message(self, request: web.Request):
        """API / POST /message/:sessionId/:peerId."""
        ids = self.ids(request)
        if ids is None:
            return web.json_response({"message": "Invalid sessionId or peerId"}, status=400)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"message": "Body must be JSON"}, status=400)
        status, answer, woken = self.relay.message(*ids, body)
        if status == 200:
            log.info("session %s: %s -> %s %s", ids[0], ids[1], body["target"], body["type"])
        self.wake(woken)
        return web.json_response(answer, status=status)

    async def events(self, request: web.Request):
        """API / GET /events/:sessionId/:peerId: the peer's event stream.

        Writes the peer's queued messages in order, taking each off the queue
        only once written, and a ping every `ping` seconds. A newer stream of
        the same peer ends this one; the client going away ends it too.
        """
        ids = self.ids(request)
        if ids is None:
            return web.json_response({"message": "Invalid sessionId or peerId"}, status=400)
        peer = self.relay.peer(*ids)
        if peer is None:
            return web.json_response({"message": "Peer not registered"}, status=404)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        stream = Stream()
        older = self.streams.get(ids)
        if older is not None:
            older.replaced = True
            older.wake.set()
        self.streams[ids] = stream
        self.relay.stream_opened(*ids)
        log.info("session %s: %s opened a stream", *ids)
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + self.ping
        try:
            while not stream.replaced:
                if stream.dropped:
                    log.info("session %s: dropping %s's stream", *ids)
                    request.transport.abort()
                    return response
                if request.transport is None or request.transport.is_closing():
                    break
                while peer.queue and not (stream.replaced or stream.dropped):
                    await response.write(sse_event(peer.queue[0]))
                    peer.queue.popleft()
                if loop.time() >= next_ping:
                    await response.write(sse_event({"time": iso_ms(time.time()), "type": "ping"}))
                    next_ping = loop.time() + self.ping
                stream.wake.clear()
                # Wake up at least every second to notice a client that went away.
                timeout = max(0.0, min(1.0, next_ping - loop.time()))
                try:
                    await asyncio.wait_for(stream.wake.wait(), timeout)
                except asyncio.TimeoutError:
                    pass
            await response.write_eof()
        except (ConnectionError, RuntimeError) as e:
            log.debug("session %s: %s's stream broke: %s", ids[0], ids[1], e)
        finally:
            if self.streams.get(ids) is stream:
                del self.streams[ids]
            log.info("session %s: %s's stream ended", *ids)
        return response

    # -- test hooks (for tests only; not in the description) -----------------

    async def test_drop(self, request: web.Request):
        """POST /test/drop/:sessionId/:peerId: end that peer's open stream abruptly."""
        ids = self.ids(request)
        stream = self.streams.get(ids) if ids else None
        if stream is None:
            return web.json_response({"message": "No open stream"}, status=404)
        stream.dropped = True
        stream.wake.set()
        return web.json_response({"message": "Dropping"})

    async def test_session(self, request: web.Request):
        """GET /test/sessions/:sessionId: {peers, streams_opened, streams_open, pending, messages}."""
        session_id = request.match_info["session"]
        report = self.relay.report(session_id)
        if report is None:
            return web.json_response({"message": "Session not found"}, status=404)
        report["streams_open"] = [peer for (s, peer) in self.streams if s == session_id]
        return web.json_response(report)

    async def _shutdown(self, app):
        for stream in self.streams.values():
            stream.replaced = True
            stream.wake.set()


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: pick a free port (default)")
    p.add_argument("--ice-url", action="append", default=[], metavar="URL", help="an ICE server URL (repeatable)")
    p.add_argument("--turn-secret", help="coturn static-auth-secret: /iceServers gets time-limited credentials")
    p.add_argument("--turn-ttl", type=int, default=86400, help="lifetime of TURN credentials in seconds")
    p.add_argument("--ping", type=float, default=15.0, help="seconds between ping events on each stream")
    p.add_argument("--static", metavar="DIR", help="serve DIR under /static/")
    p.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="serve HTTPS")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.ping <= 0:
        p.error("--ping must be positive")
    return args


async def run(args: argparse.Namespace):
    server = Server(Relay(), args.ice_url, args.turn_secret, args.turn_ttl, args.ping, args.static)
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
        format="sse %(levelname)s %(message)s",
    )
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
