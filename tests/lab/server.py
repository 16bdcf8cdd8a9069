"""The original doorbell lab's signaling server, as a test fixture.

Reproduces the Flask-SocketIO "room" server of the classroom doorbell design
(as the project's protocol notes describe it), quirks included, so the doorbell can be
tested against it unchanged:

- `rooms_db` maps a connection (sid) to its room; a room's members are
  counted there. `connect`/`disconnect` only print: a client that disconnects
  without `bye` stays counted (a ghost member).
- `new_peer` is emitted with NO argument (on the wire `42["new_peer"]`).
- `invite`, `ok`, `ice_candidate` are relayed to the sender's room, sender
  excluded, only when their content is truthy (a null candidate is dropped).
- `bye(room)` leaves the room and is relayed only to whoever remains (nothing
  when nobody does).
- A sender that is in no room (e.g. after `full`) reaches nobody.
- Same-origin Socket.IO (the libraries' default CORS policy), default pings.

It runs under either library generation:
- python-socketio 4.x / python-engineio 3.x (Engine.IO 3, Socket.IO protocol 4;
  the page then loads socket.io-client 2.x),
- python-socketio 5.x / python-engineio 4.x (Engine.IO 4, Socket.IO 5;
  socket.io-client 4.x).

Backends:
- `aiohttp` (default): python-socketio's AsyncServer on aiohttp.
- `flask`: a real Flask-SocketIO app with the same handlers, threading mode,
  under Werkzeug's threaded development server (what `socketio.run(app, ...)`
  starts when neither eventlet nor gevent is installed). With Flask-SocketIO 4
  that server has no WebSocket (long-polling only); with 5 it has WebSocket
  through simple-websocket.

Usage:
  python tests/lab/server.py [--port 0] [--tls CERT KEY] [--polling-only]
                             [--client-js PATH] [--backend aiohttp|flask] [--verbose]

stdout gets exactly two lines, flushed:
  VERSION python-socketio <x> python-engineio <y>
  PORT <n>
everything else (logs, the handlers' prints) goes to stderr.

Routes: `/` the page (tests/lab/page/index.html), `/webrtcclient.js`,
`/socket.io.js` (the socket.io client script: --client-js, by default
tests/lab/node_modules/socket.io-client-{2,4}/dist/socket.io.js matching the
Engine.IO generation), `/rooms` (JSON {room: member count} from rooms_db, for
tests), and Socket.IO at `/socket.io/`. Exits with status 0 on SIGTERM/SIGINT.
"""
import argparse
import collections
import inspect
import logging
import os
import signal
import ssl
import sys
from importlib.metadata import version as dist_version

HERE = os.path.dirname(os.path.abspath(__file__))
PAGE_DIR = os.path.join(HERE, "page")
SIO_VERSION = dist_version("python-socketio")
EIO_VERSION = dist_version("python-engineio")
EIO_MAJOR = int(EIO_VERSION.split(".")[0])

log = logging.getLogger("lab")


def say(*args):
    """The original handlers `print`; here that goes to stderr (stdout is the protocol)."""
    print(*args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# The server's rules, translated from the original handlers. They do no IO:
# each returns the actions the handler performs, in order, and the backends
# below carry them out with their library's calls.
#
#   ("join_room", room) / ("leave_room", room)
#   ("emit", event, args, room)   room None: to the sender only;
#                                 else: to that room, sender excluded.
#                                 args is () for an event with no argument.
# ---------------------------------------------------------------------------

rooms_db = {}  # sid -> room name


def on_join(sid, room):
    count = list(rooms_db.values()).count(room)
    if count == 0:
        say(f"Received join from user: {sid} for NEW room: {room}.")
        rooms_db[sid] = room
        return [("join_room", room), ("emit", "created", (room,), None)]
    if count == 1:
        say(f"Received join from user: {sid} for EXISTING room: {room}.")
        rooms_db[sid] = room
        return [
            ("join_room", room),
            ("emit", "joined", (room,), None),
            # No argument at all: on the wire 42["new_peer"].
            ("emit", "new_peer", (), room),
        ]
    say(f"Refusing join from user: {sid} for FULL room: {room}.")
    return [("emit", "full", (room,), None)]


def on_p2p_message(sid, msg_type, content, room=None):
    # Relayed to the other members of the sender's room (sender excluded),
    # only when the content is truthy; a sender in no room reaches nobody.
    room = room or rooms_db.get(sid)
    say(f"Received {msg_type} message: {content} from user: {sid} in room {room}")
    if not content or room is None:
        return []
    return [("emit", msg_type, (content,), room)]


def on_bye(sid, room):
    actions = [("leave_room", room)]
    if rooms_db.get(sid) == room:
        del rooms_db[sid]
    say(f"Received bye from user: {sid} for room: {room}")
    # Relayed to whoever remains in the room, and only when someone does.
    if room in rooms_db.values():
        actions.extend(on_p2p_message(sid, "bye", room, room=room))
    return actions


def room_counts():
    return dict(collections.Counter(rooms_db.values()))


# ---------------------------------------------------------------------------
# Files served beside Socket.IO.
# ---------------------------------------------------------------------------


def default_client_js():
    package = "socket.io-client-2" if EIO_MAJOR < 4 else "socket.io-client-4"
    return os.path.join(HERE, "node_modules", package, "dist", "socket.io.js")


def static_files(client_js):
    return {
        "/": os.path.join(PAGE_DIR, "index.html"),
        "/webrtcclient.js": os.path.join(PAGE_DIR, "webrtcclient.js"),
        "/socket.io.js": client_js,
    }


# ---------------------------------------------------------------------------
# Backend: python-socketio AsyncServer on aiohttp.
# ---------------------------------------------------------------------------


async def maybe_await(value):
    # enter_room/leave_room are plain functions in python-socketio 4 and
    # coroutines in 5.
    if inspect.isawaitable(value):
        await value


def python311_manager():
    """python-socketio 4's AsyncManager with an emit that works on Python 3.11.

    Its emit ends with `asyncio.wait(<list of coroutines>)`, which Python 3.11
    refuses (TypeError: Passing coroutines is forbidden): every emit from a
    handler would fail. This is the same emit with the coroutines wrapped in
    tasks; nothing else changes.
    """
    import asyncio

    from socketio.asyncio_manager import AsyncManager

    class Python311Manager(AsyncManager):
        async def emit(self, event, data, namespace, room=None, skip_sid=None, callback=None, **kwargs):
            if namespace not in self.rooms or room not in self.rooms[namespace]:
                return
            tasks = []
            if not isinstance(skip_sid, list):
                skip_sid = [skip_sid]
            for sid in self.get_participants(namespace, room):
                if sid not in skip_sid:
                    if callback is not None:
                        id = self._generate_ack_id(sid, namespace, callback)
                    else:
                        id = None
                    tasks.append(asyncio.ensure_future(self.server._emit_internal(sid, event, data, namespace, id)))
            if tasks == []:
                return
            await asyncio.wait(tasks)

    return Python311Manager()


def release_polls_on_client_close():
    """Make python-engineio 4's asyncio socket release a pending long-poll
    when the client closes, as its threading socket (Flask-SocketIO) does.

    On a CLOSE packet from a polling client, the threading socket's close()
    puts None in the packet queue, which ends the client's pending GET at
    once; the asyncio socket's close() does not, so that GET stays open until
    the next ping interval (25 s) and a client that waits for it (as
    python-socketio's does) takes that long to disconnect. The original
    server is Flask-SocketIO: behave like it.
    """
    from engineio import async_socket

    original_close = async_socket.AsyncSocket.close

    async def close(self, wait=True, abort=False, **kwargs):
        was_open = not self.closed and not self.closing
        await original_close(self, wait=wait, abort=abort, **kwargs)
        if was_open and abort:
            self.queue.put_nowait(None)

    async_socket.AsyncSocket.close = close


def run_aiohttp(args, files, announce):
    import asyncio

    import socketio
    from aiohttp import web

    options = {"async_mode": "aiohttp", "logger": args.verbose, "engineio_logger": args.verbose}
    if SIO_VERSION.startswith("4."):
        options["client_manager"] = python311_manager()
    if EIO_MAJOR >= 4:
        release_polls_on_client_close()
    if args.polling_only:
        if EIO_MAJOR >= 4:
            options["transports"] = ["polling"]
        else:
            # python-engineio 3 has no `transports` option. Flask-SocketIO 4's
            # development server (threading mode, no WebSocket) advertises no
            # upgrade in its handshake and answers WebSocket requests with
            # 400: do the same (the middleware below does the 400).
            options["allow_upgrades"] = False
    sio = socketio.AsyncServer(**options)

    @web.middleware
    async def refuse_websocket(request, handler):
        if (
            request.path.startswith("/socket.io")
            and (
                request.query.get("transport") == "websocket"
                or request.headers.get("Upgrade", "").lower() == "websocket"
            )
        ):
            # What python-engineio 3 answers when it has no WebSocket support.
            return web.Response(status=400, text="Bad Request")
        return await handler(request)

    middlewares = [refuse_websocket] if args.polling_only and EIO_MAJOR < 4 else []
    app = web.Application(middlewares=middlewares)
    sio.attach(app)

    async def perform(sid, actions):
        for action in actions:
            if action[0] == "join_room":
                await maybe_await(sio.enter_room(sid, action[1]))
            elif action[0] == "leave_room":
                await maybe_await(sio.leave_room(sid, action[1]))
            else:
                _, event, data, room = action
                if room is None:
                    await sio.emit(event, *data, room=sid)
                else:
                    await sio.emit(event, *data, room=room, skip_sid=sid)

    @sio.event
    async def connect(sid, environ, *_auth):
        say("Received connect")

    @sio.event
    async def disconnect(sid, *_reason):
        say("Received disconnect")

    @sio.event
    async def join(sid, room):
        await perform(sid, on_join(sid, room))

    @sio.event
    async def invite(sid, content):
        await perform(sid, on_p2p_message(sid, "invite", content))

    @sio.event
    async def ok(sid, content):
        await perform(sid, on_p2p_message(sid, "ok", content))

    @sio.event
    async def ice_candidate(sid, content):
        await perform(sid, on_p2p_message(sid, "ice_candidate", content))

    @sio.event
    async def bye(sid, room):
        await perform(sid, on_bye(sid, room))

    def file_route(path):
        async def serve(_request):
            if not os.path.isfile(path):
                raise web.HTTPNotFound(text=f"{os.path.basename(path)} not found\n")
            return web.FileResponse(path)

        return serve

    for route, path in files.items():
        app.router.add_get(route, file_route(path))

    async def rooms(_request):
        return web.json_response(room_counts())

    app.router.add_get("/rooms", rooms)

    ssl_context = None
    if args.tls:
        ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ssl_context.load_cert_chain(*args.tls)

    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", args.port, ssl_context=ssl_context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        # The page's origin is accepted, as by the Flask version (same-origin
        # policy, the library default): python-engineio's aiohttp driver
        # always reports the scheme as http, which would refuse an https page.
        scheme = "https" if ssl_context else "http"
        sio.eio.cors_allowed_origins = [f"{scheme}://127.0.0.1:{port}", f"{scheme}://localhost:{port}"]
        announce(port)
        await stop.wait()
        log.info("stopping")
        await runner.cleanup()

    asyncio.run(main())


# ---------------------------------------------------------------------------
# Backend: a real Flask-SocketIO app under Werkzeug (threading mode).
# ---------------------------------------------------------------------------


def run_flask(args, files, announce):
    from flask import Flask, jsonify, request, send_file
    from flask_socketio import SocketIO, emit, join_room, leave_room
    from werkzeug.serving import make_server

    app = Flask(__name__)
    options = {"async_mode": "threading", "logger": args.verbose, "engineio_logger": args.verbose}
    if args.polling_only and EIO_MAJOR >= 4:
        options["transports"] = ["polling"]
    # With python-engineio 3, threading mode has no WebSocket at all: the
    # handshake offers no upgrade and WebSocket requests get 400, which is what
    # --polling-only asks for anyway.
    socketio = SocketIO(app, **options)

    def perform(actions):
        for action in actions:
            if action[0] == "join_room":
                join_room(action[1])
            elif action[0] == "leave_room":
                leave_room(action[1])
            else:
                _, event, data, room = action
                if room is None:
                    emit(event, *data)
                else:
                    emit(event, *data, room=room, include_self=False)

    @socketio.on("connect")
    def handle_connect(*_auth):
        say("Received connect")

    @socketio.on("disconnect")
    def handle_disconnect(*_reason):
        say("Received disconnect")

    @socketio.on("join")
    def handle_join(room):
        perform(on_join(request.sid, room))

    @socketio.on("invite")
    def handle_invite(content):
        perform(on_p2p_message(request.sid, "invite", content))

    @socketio.on("ok")
    def handle_ok(content):
        perform(on_p2p_message(request.sid, "ok", content))

    @socketio.on("ice_candidate")
    def handle_ice_candidate(content):
        perform(on_p2p_message(request.sid, "ice_candidate", content))

    @socketio.on("bye")
    def handle_bye(room):
        perform(on_bye(request.sid, room))

    def file_view(route, path):
        def view():
            if not os.path.isfile(path):
                return f"{os.path.basename(path)} not found\n", 404
            return send_file(path)

        view.__name__ = "file_" + (route.strip("/").replace(".", "_") or "index")
        return view

    for route, path in files.items():
        app.add_url_rule(route, view_func=file_view(route, path))

    @app.route("/rooms")
    def rooms():
        return jsonify(room_counts())

    # `socketio.run(app, host, port, ssl_context=...)` in threading mode is
    # `app.run(host, port, threaded=True, ...)`, which is Werkzeug's
    # run_simple -> make_server(threaded=True) -> serve_forever, on the app
    # that Flask-SocketIO wrapped. Calling make_server directly is the same
    # server, but it can bind port 0 and tell us the port, and it skips
    # Flask's banner on stdout and Flask-SocketIO 5's refusal to run
    # Werkzeug without a terminal.
    ssl_context = tuple(args.tls) if args.tls else None
    server = make_server("127.0.0.1", args.port, app, threaded=True, ssl_context=ssl_context)

    announce(server.socket.getsockname()[1])
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    log.info("stopping")
    # python-engineio 3 runs its ping monitor in a non-daemon thread that
    # never ends, and request threads may be blocked in long-polls: leave now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# ---------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description="The original doorbell lab's signaling server (test fixture).")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1; 0 picks a free one (default)")
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="serve HTTPS with this PEM certificate and key")
    parser.add_argument(
        "--polling-only", action="store_true", help="refuse WebSocket, like a development server without it"
    )
    parser.add_argument("--client-js", help="the socket.io client script served at /socket.io.js")
    parser.add_argument("--backend", choices=["aiohttp", "flask"], default="aiohttp")
    parser.add_argument("--verbose", action="store_true", help="log Socket.IO and Engine.IO packets to stderr")
    return parser.parse_args(argv)


def interrupt(_signum, _frame):
    raise KeyboardInterrupt


def main(argv=None):
    # SIGTERM or SIGINT (even if the parent ignored it) end the process
    # quietly with status 0; the aiohttp backend installs its own handlers.
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    args = parse_args(argv)
    sys.stdout.write(f"VERSION python-socketio {SIO_VERSION} python-engineio {EIO_VERSION}\n")
    sys.stdout.flush()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    # Werkzeug's request lines stay (the original's console shows them); the
    # Socket.IO packet logs only with --verbose.
    for name in ("socketio.server", "engineio.server"):
        logging.getLogger(name).setLevel(logging.INFO if args.verbose else logging.ERROR)
    client_js = os.path.abspath(args.client_js) if args.client_js else default_client_js()
    if not os.path.isfile(client_js):
        log.warning("no socket.io client script at %s: /socket.io.js will answer 404 (npm ci in tests/lab)", client_js)
    files = static_files(client_js)

    def announce(port):
        log.info(
            "%s backend, %s, polling only: %s, client script %s",
            args.backend,
            "https" if args.tls else "http",
            args.polling_only,
            client_js,
        )
        sys.stdout.write(f"PORT {port}\n")
        sys.stdout.flush()
        # Anything a library prints from now on must not reach the protocol.
        sys.stdout = sys.stderr

    if args.backend == "flask":
        run_flask(args, files, announce)
    else:
        run_aiohttp(args, files, announce)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
