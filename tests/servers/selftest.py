"""A quick protocol self-test of the test servers in this folder.

Starts device_ws.py (seed 002) and sse.py (seed 004) as subprocesses on free
ports and talks to them with aiohttp's client as fake devices, viewers and
peers, checking the behaviour tests/servers/README.md describes. No WebRTC:
SDPs and candidates are opaque payloads here. Prints one line per check and
exits 0 when all pass (1 at the first failure). Every wait has a timeout;
the whole run takes a few seconds.

  python tests/servers/selftest.py
"""
import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import time

import aiohttp

HERE = os.path.dirname(os.path.abspath(__file__))
TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
WAIT = 3.0  # seconds any single expected event may take
SECRET = "s3cret"

checked = 0


class CheckFailed(Exception):
    pass


def check(condition, what: str, detail=None):
    """Record one check; stop the run at the first failure."""
    global checked
    if not condition:
        raise CheckFailed(f"{what}" + (f": got {detail!r}" if detail is not None else ""))
    checked += 1
    print(f"ok   {what}", flush=True)


def turn_ok(username: str, credential: str, who: str) -> bool:
    """coturn use-auth-secret: `<expiry>:<who>` signed with HMAC-SHA1, in the future."""
    expiry, _, name = username.partition(":")
    digest = hmac.new(SECRET.encode(), username.encode(), hashlib.sha1).digest()
    return (
        re.fullmatch(who, name) is not None
        and int(expiry) > time.time()
        and credential == base64.b64encode(digest).decode()
    )


class ServerProcess:
    """One server script as a subprocess; `base` is its http:// address."""

    def __init__(self, script: str, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, script), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL if "-v" not in sys.argv else None,
            text=True,
        )
        line = self.proc.stdout.readline()
        match = re.fullmatch(r"listening on (\d+)\n", line)
        if match is None:
            self.stop()
            raise CheckFailed(f"{script} printed {line!r} instead of 'listening on PORT'")
        self.base = f"http://127.0.0.1:{match.group(1)}"

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ---------------------------------------------------------------------------
# Seed 002: device_ws.py
# ---------------------------------------------------------------------------


class WsPeer:
    """A fake device or viewer on a WebSocket: send messages, expect messages."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws

    @classmethod
    async def connect(cls, http: aiohttp.ClientSession, url: str) -> "WsPeer":
        return cls(await http.ws_connect(url, autoping=True))

    async def send(self, kind: str, payload: dict, request_id=None):
        msg = {"type": kind, "ts": "2025-01-01T12:34:56.789Z", "payload": payload}
        if request_id:
            msg["request_id"] = request_id
        await self.ws.send_str(json.dumps(msg))

    async def recv(self) -> dict:
        frame = await asyncio.wait_for(self.ws.receive(), WAIT)
        if frame.type != aiohttp.WSMsgType.TEXT:
            raise CheckFailed(f"expected a message, got {frame.type.name} {frame.data} {frame.extra}")
        msg = json.loads(frame.data)
        if not TS.fullmatch(msg.get("ts", "")):
            raise CheckFailed(f"message without a proper ts: {msg}")
        return msg

    async def expect(self, kind: str) -> dict:
        msg = await self.recv()
        if msg["type"] != kind:
            raise CheckFailed(f"expected {kind}, got {msg}")
        return msg

    async def closed_with(self) -> int:
        """Wait for the server's close frame; its code."""
        while True:
            frame = await asyncio.wait_for(self.ws.receive(), WAIT)
            if frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                return self.ws.close_code if frame.type != aiohttp.WSMsgType.CLOSE else frame.data


async def device(http, server, device_id="cam1") -> WsPeer:
    d = await WsPeer.connect(http, server.base + "/ws/device")
    await d.send("hello", {"device_id": device_id})
    await d.expect("hello_ack")
    return d


async def viewer(http, server, token="tok1") -> WsPeer:
    v = await WsPeer.connect(http, server.base + "/ws/viewer")
    await v.send("hello", {"token": token})
    await v.expect("hello_ack")
    return v


async def watch(v: WsPeer, d: WsPeer, device_id="cam1") -> str:
    await v.send("watch_request", {"device_id": device_id}, "req-w")
    ready = await v.expect("watch_ready")
    request = await d.expect("watch_request")
    assert ready["payload"]["session_id"] == request["payload"]["session_id"]
    return ready["payload"]["session_id"]


async def device_ws_checks(http: aiohttp.ClientSession, server: ServerProcess):
    base = server.base

    # Device hello.
    d = await WsPeer.connect(http, base + "/ws/device")
    await d.send("hello", {"device_id": "cam1"}, "req-h")
    ack = await d.recv()
    check(
        ack["type"] == "hello_ack"
        and ack["payload"]["device_id"] == "cam1"
        and TS.fullmatch(ack["payload"]["server_time"])
        and ack["request_id"] == "req-h",
        "device hello -> hello_ack {device_id, server_time} with ts and request_id",
        ack,
    )

    bad = await WsPeer.connect(http, base + "/ws/device")
    await bad.send("hello", {"device_id": "nobody"})
    code = await bad.closed_with()
    check(code == 1008, "unknown device -> close 1008", code)

    bad = await WsPeer.connect(http, base + "/ws/device")
    await bad.send("heartbeat", {})
    code = await bad.closed_with()
    check(code == 1008, "device message before hello -> close 1008", code)

    await d.ws.send_str('{"type": "heartbeat", "ts": "x", "payload": []}')
    err = await d.expect("error")
    await d.ws.send_str("not json")
    err2 = await d.expect("error")
    await d.send("heartbeat", {}, "req-hb")
    hb = await d.expect("heartbeat_ack")
    check(
        err["payload"]["message"] == err2["payload"]["message"] == "Invalid message" and hb["request_id"] == "req-hb",
        "invalid messages -> error 'Invalid message', connection stays; heartbeat -> heartbeat_ack",
        (err, err2, hb),
    )

    await d.send("device_presence", {"battery": 85})
    await d.send("device_presence", {"recording": False})
    await d.send("heartbeat", {})
    await d.expect("heartbeat_ack")
    report = await (await http.get(base + "/test/devices/cam1")).json()
    check(
        report["online"]
        and report["presence"] == {"battery": 85, "recording": False}
        and report["hellos"] == 1
        and report["heartbeats"] == 2
        and report["messages"] == ["hello", "heartbeat", "device_presence", "device_presence", "heartbeat"],
        "device_presence merged; GET /test/devices/cam1 reports online, presence, hellos, heartbeats, messages",
        report,
    )

    # Viewer hello.
    bad = await WsPeer.connect(http, base + "/ws/viewer")
    await bad.send("hello", {"token": "wrong"})
    code = await bad.closed_with()
    check(code == 1008, "viewer hello with an invalid token -> close 1008", code)
    v = await WsPeer.connect(http, base + "/ws/viewer")
    await v.send("hello", {"token": "tok1"})
    ack = await v.expect("hello_ack")
    check(ack["payload"]["user_id"] == "u1" and TS.fullmatch(ack["payload"]["server_time"]), "viewer hello -> hello_ack {user_id}", ack)

    # Watch requests that fail.
    await v.send("watch_request", {"device_id": "nobody"}, "req-1")
    err = await v.expect("error")
    check(err["payload"]["message"] == "Device not found" and err["request_id"] == "req-1", "unknown device -> error 'Device not found' with request_id", err)
    await v.send("watch_request", {"device_id": "cam2"}, "req-2")
    err = await v.expect("error")
    check(err["payload"]["message"] == "Device is offline" and err["request_id"] == "req-2", "device offline -> error 'Device is offline' with request_id", err)

    # A watch session relaying offer, answer and candidates.
    await v.send("watch_request", {"device_id": "cam1"}, "req-3")
    ready = await v.expect("watch_ready")
    request = await d.expect("watch_request")
    sid = ready["payload"]["session_id"]
    vice, dice = ready["payload"]["ice_servers"], request["payload"]["ice_servers"]
    check(
        ready["request_id"] == "req-3"
        and re.fullmatch(r"[0-9a-f-]{36}", sid)
        and request["payload"]["session_id"] == sid
        and request["payload"]["user_id"] == "u1",
        "watch_request -> watch_ready {session_id} to the viewer, watch_request {session_id, user_id} to the device",
        (ready, request),
    )
    check(
        vice[0] == {"urls": "stun:stun.example.org:3478"}
        and vice[1]["urls"] == ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"]
        and vice[1]["credentialType"] == "password"
        and turn_ok(vice[1]["username"], vice[1]["credential"], f"viewer_u1_{sid[:8]}")
        and turn_ok(dice[1]["username"], dice[1]["credential"], f"device_{sid[:8]}"),
        "ice_servers: stun entry, one TURN entry with coturn REST credentials (viewer_u1_<8>, device_<8>)",
        (vice, dice),
    )
    sdp_offer = {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"}
    await v.send("signal_offer", {"session_id": sid, "sdp": sdp_offer})
    got = await d.expect("signal_offer")
    check(got["payload"] == {"session_id": sid, "sdp": sdp_offer}, "signal_offer viewer -> device", got)
    sdp_answer = {"type": "answer", "sdp": "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\n"}
    await d.send("signal_answer", {"session_id": sid, "sdp": sdp_answer})
    got = await v.expect("signal_answer")
    check(got["payload"] == {"session_id": sid, "sdp": sdp_answer}, "signal_answer device -> viewer", got)
    cand = {"candidate": "candidate:1 1 UDP 2130706431 192.168.1.100 54321 typ host", "sdpMid": "0", "sdpMLineIndex": 0}
    await v.send("signal_ice", {"session_id": sid, "candidate": cand})
    await v.send("signal_ice", {"session_id": sid, "candidate": None})
    got1, got2 = await d.expect("signal_ice"), await d.expect("signal_ice")
    await d.send("signal_ice", {"session_id": sid, "candidate": cand})
    await d.send("signal_ice", {"session_id": sid, "candidate": None})
    got3, got4 = await v.expect("signal_ice"), await v.expect("signal_ice")
    check(
        [g["payload"]["candidate"] for g in (got1, got2, got3, got4)] == [cand, None, cand, None],
        "signal_ice both ways, including the null end-of-candidates",
        (got1, got2, got3, got4),
    )
    await v.send("signal_offer", {"session_id": "no-such-session", "sdp": sdp_offer}, "req-4")
    err = await v.expect("error")
    check(err["payload"]["message"] == "Session not found" and err["request_id"] == "req-4", "unknown session -> error 'Session not found'", err)

    await v.send("end_watch", {"session_id": sid})
    ended = await d.expect("watch_ended")
    check(ended["payload"] == {"session_id": sid, "reason": "user_ended"}, "end_watch -> watch_ended 'user_ended' to the device", ended)

    # Viewer disconnect.
    sid = await watch(v, d)
    await v.ws.close()
    ended = await d.expect("watch_ended")
    check(ended["payload"] == {"session_id": sid, "reason": "viewer_disconnected"}, "viewer disconnect -> watch_ended 'viewer_disconnected' to the device", ended)

    # Two viewers on one device; the device goes away (close-device hook).
    v1, v2 = await viewer(http, server, "tok1"), await viewer(http, server, "tok2")
    sid1, sid2 = await watch(v1, d), await watch(v2, d)
    resp = await http.post(base + "/test/close-device/cam1?code=1011")
    code = await d.closed_with()
    e1, e2 = await v1.expect("watch_ended"), await v2.expect("watch_ended")
    check(code == 1011 and resp.status == 200, "POST /test/close-device/cam1?code=1011 closes the device's socket with 1011", code)
    check(
        e1["payload"] == {"session_id": sid1, "reason": "device_disconnected"}
        and e2["payload"] == {"session_id": sid2, "reason": "device_disconnected"},
        "two viewers watching one device both get watch_ended 'device_disconnected'",
        (e1, e2),
    )
    report = await (await http.get(base + "/test/devices/cam1")).json()
    check(not report["online"], "the device is reported offline after it is closed", report)

    # A device that reconnects replaces its old connection; a viewer's sessions on the old one end.
    d1 = await device(http, server)
    sid = await watch(v1, d1)
    d2 = await device(http, server)
    code = await d1.closed_with()
    ended = await v1.expect("watch_ended")
    check(
        code == 1001 and ended["payload"] == {"session_id": sid, "reason": "device_disconnected"},
        "a second connection of a device closes the first with 1001",
        (code, ended),
    )
    # The plain disconnect of a device (it closes its socket itself).
    sid = await watch(v2, d2)
    await d2.ws.close()
    ended = await v2.expect("watch_ended")
    check(ended["payload"] == {"session_id": sid, "reason": "device_disconnected"}, "device disconnect -> watch_ended 'device_disconnected' to the viewer", ended)
    for ws in (v1, v2):
        await ws.ws.close()


async def device_ws_limits(http: aiohttp.ClientSession, server: ServerProcess):
    """The server started with --heartbeat-timeout 1 --rate 5."""
    base = server.base
    d = await device(http, server)
    start = time.monotonic()
    code = await d.closed_with()
    took = time.monotonic() - start
    check(code == 1001 and 0.9 <= took <= 2.5, f"a device silent for --heartbeat-timeout (1 s) is closed with 1001 (after {took:.1f} s)", (code, took))

    d = await device(http, server)
    for i in range(12):
        await d.send("heartbeat", {}, f"r{i}")
    answers = []
    while True:
        frame = await asyncio.wait_for(d.ws.receive(), WAIT)
        if frame.type != aiohttp.WSMsgType.TEXT:
            break
        answers.append(json.loads(frame.data))
    kinds = [(a["type"], a["payload"].get("message")) for a in answers]
    check(
        kinds[:4] == [("heartbeat_ack", None)] * 4
        and kinds[4:] == [("error", "Rate limit exceeded")] * 3
        and frame.data == 1008,
        "over --rate: error 'Rate limit exceeded', the third one closes with 1008",
        (kinds, frame.data),
    )

    resp = await http.post(base + "/test/stop-accepting?seconds=0.6")
    check(resp.status == 200, "POST /test/stop-accepting?seconds=0.6")
    try:
        await http.ws_connect(base + "/ws/device")
        status = 101
    except aiohttp.WSServerHandshakeError as e:
        status = e.status
    v = await WsPeer.connect(http, base + "/ws/viewer")  # viewers are still accepted
    await v.ws.close()
    check(status == 503, "device upgrades refused with HTTP 503 while not accepting (viewers still accepted)", status)
    await asyncio.sleep(0.7)
    d = await device(http, server)
    check(True, "device accepted again after the pause")
    await d.ws.close()


# ---------------------------------------------------------------------------
# Seed 004: sse.py
# ---------------------------------------------------------------------------


class SseStream:
    """An open GET /events stream; events in order on a queue."""

    def __init__(self, http: aiohttp.ClientSession, url: str):
        self.events: asyncio.Queue = asyncio.Queue()
        self.task = asyncio.create_task(self._read(http, url))

    async def _read(self, http, url):
        try:
            async with http.get(url, timeout=aiohttp.ClientTimeout(total=None)) as resp:
                await self.events.put(("status", resp.status, resp.headers.get("Content-Type")))
                async for line in resp.content:
                    line = line.decode().rstrip("\r\n")
                    if line.startswith("data: "):
                        await self.events.put(json.loads(line[len("data: "):]))
            await self.events.put(("end", "clean"))
        except aiohttp.ClientPayloadError:
            await self.events.put(("end", "abrupt"))

    async def next(self, pings=False):
        while True:
            event = await asyncio.wait_for(self.events.get(), WAIT)
            if pings or not (isinstance(event, dict) and event.get("type") == "ping"):
                return event

    def close(self):
        self.task.cancel()


async def sse_checks(http: aiohttp.ClientSession, server: ServerProcess):
    base = server.base

    ice = await (await http.get(base + "/iceServers")).json()
    check(
        set(ice) == {"urls", "username", "credential"}
        and ice["urls"] == ["stun:stun.example.org:3478", "turn:turn.example.org:3478?transport=udp"]
        and turn_ok(ice["username"], ice["credential"], r".+"),
        "GET /iceServers -> {urls, username, credential} with coturn REST credentials",
        ice,
    )

    resp = await http.post(base + "/register/bad.id/p1")
    check(resp.status == 400, "an id outside [A-Za-z0-9_-]{1,128} -> 400", resp.status)
    resp = await http.get(base + "/events/s1/nobody")
    check(resp.status == 404, "GET /events for an unregistered peer -> 404", resp.status)

    resp = await http.post(base + "/register/s1/peer1")
    body = await resp.json()
    check(resp.status == 200 and body == {"message": "Session registered successfully"}, "POST /register -> 200 'Session registered successfully'", body)
    await http.post(base + "/register/s1/peer2")
    offer = {"type": "offer", "sdp": "v=0\r\n"}
    resp = await http.post(base + "/message/s1/peer2", json={"type": "offer", "payload": offer, "target": "peer1"})
    body = await resp.json()
    check(resp.status == 200 and body == {"message": "Message sent"}, "POST /message -> 200 'Message sent' (target's stream not open yet)", body)

    s1 = SseStream(http, base + "/events/s1/peer1")
    status = await s1.next()
    check(status == ("status", 200, "text/event-stream"), "GET /events -> 200 text/event-stream", status)
    e1, e2 = await s1.next(), await s1.next()
    check(
        e1 == {"type": "new-peer", "senderId": "peer2"} and e2 == {"type": "offer", "payload": offer, "senderId": "peer2"},
        "new-peer and the offer, sent before peer1 opened its stream, are delivered in order when it does",
        (e1, e2),
    )

    s2 = SseStream(http, base + "/events/s1/peer2")
    await s2.next()
    answer = {"type": "answer", "sdp": "v=0\r\n"}
    await http.post(base + "/message/s1/peer1", json={"type": "answer", "payload": answer, "target": "peer2"})
    await http.post(base + "/message/s1/peer1", json={"type": "ice-candidate", "payload": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0"}, "target": "peer2"})
    await http.post(base + "/message/s1/peer1", json={"type": "ice-candidate", "payload": None, "target": "peer2"})
    got = [await s2.next() for _ in range(3)]
    check(
        got[0] == {"type": "answer", "payload": answer, "senderId": "peer1"}
        and got[1]["type"] == "ice-candidate"
        and got[1]["senderId"] == "peer1"
        and got[2] == {"type": "ice-candidate", "payload": None, "senderId": "peer1"},
        "answer and ice-candidates (payload null at the end) relayed with senderId on an open stream",
        got,
    )

    resp = await http.post(base + "/message/s1/peer1", json={"type": "offer", "payload": offer, "target": "ghost"})
    body = await resp.json()
    check(resp.status == 404 and body == {"message": "Peer not found"}, "unknown target -> 404 'Peer not found'", body)
    resp = await http.post(base + "/message/s1/peer1", json={"type": "bye", "payload": None, "target": "peer2"})
    check(resp.status == 400, "a type other than offer/answer/ice-candidate -> 400", resp.status)

    ping = await s1.next(pings=True)
    check(ping.get("type") == "ping" and TS.fullmatch(ping.get("time", "")) and set(ping) == {"time", "type"}, "ping events {time, type: 'ping'} on an open stream", ping)

    await http.post(base + "/register/s1/peer3")
    e = await s1.next()
    e2 = await s2.next()
    check(e == e2 == {"type": "new-peer", "senderId": "peer3"}, "a third peer's registration -> new-peer to both others", (e, e2))

    resp = await http.post(base + "/test/drop/s1/peer1")
    end = await s1.next()
    check(resp.status == 200 and end == ("end", "abrupt"), "POST /test/drop/s1/peer1 ends peer1's stream abruptly", end)
    await http.post(base + "/message/s1/peer2", json={"type": "offer", "payload": offer, "target": "peer1"})
    s1 = SseStream(http, base + "/events/s1/peer1")
    await s1.next()
    e = await s1.next()
    check(e == {"type": "offer", "payload": offer, "senderId": "peer2"}, "after the drop, peer1 reconnects and gets the message sent meanwhile", e)

    newer = SseStream(http, base + "/events/s1/peer2")
    await newer.next()
    end = await s2.next()
    await http.post(base + "/message/s1/peer1", json={"type": "answer", "payload": answer, "target": "peer2"})
    e = await newer.next()
    check(end == ("end", "clean") and e["type"] == "answer", "a new stream of a peer replaces its older one", (end, e))

    report = await (await http.get(base + "/test/sessions/s1")).json()
    check(
        report["peers"] == ["peer1", "peer2", "peer3"]
        and report["streams_opened"] == {"peer1": 2, "peer2": 2, "peer3": 0}
        and report["messages"][:3]
        == [
            {"from": "peer2", "to": "peer1", "type": "new-peer"},
            {"from": "peer2", "to": "peer1", "type": "offer"},
            {"from": "peer1", "to": "peer2", "type": "answer"},
        ],
        "GET /test/sessions/s1 -> peers, streams_opened, messages",
        report,
    )
    for s in (s1, newer):
        s.close()


async def main() -> int:
    started = time.monotonic()
    servers = []
    try:
        ice = ["--ice-url", "stun:stun.example.org:3478", "--ice-url", "turn:turn.example.org:3478?transport=udp"]
        ws_main = ServerProcess(
            "device_ws.py", "--device", "cam1", "--device", "cam2", "--token", "tok1:u1", "--token", "tok2:u2",
            *ice, "--ice-url", "turns:turn.example.org:5349", "--turn-secret", SECRET,
        )
        servers.append(ws_main)
        ws_limits = ServerProcess("device_ws.py", "--device", "cam1", "--heartbeat-timeout", "1", "--rate", "5")
        servers.append(ws_limits)
        sse = ServerProcess("sse.py", *ice, "--turn-secret", SECRET, "--ping", "0.3")
        servers.append(sse)
        async with aiohttp.ClientSession() as http:
            print("device_ws.py (seed 002)", flush=True)
            await device_ws_checks(http, ws_main)
            print("device_ws.py --heartbeat-timeout 1 --rate 5", flush=True)
            await device_ws_limits(http, ws_limits)
            print("sse.py (seed 004)", flush=True)
            await sse_checks(http, sse)
    except (CheckFailed, AssertionError, asyncio.TimeoutError, KeyError) as e:
        print(f"FAIL {type(e).__name__}: {e}", flush=True)
        return 1
    finally:
        for s in servers:
            s.stop()
    print(f"all {checked} checks passed in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
