"""A room signaling server that is not ours, for the compatibility test.

python-socketio 5 (Engine.IO 4 / Socket.IO 5, the stack of the original
design's Flask-SocketIO server), written from docs/protocol.md: a client is in
at most one room, two members per room, relays go to the other member only,
`bye` leaves and is relayed. Prints `PORT <n>` once listening on 127.0.0.1.
GET /rooms answers the number of open rooms.
"""
import asyncio
import sys

import socketio
from aiohttp import web

# --polling-only: no WebSocket, like Flask-SocketIO's development server
# without simple-websocket; clients must fall back to long-polling.
TRANSPORTS = ["polling"] if "--polling-only" in sys.argv else ["polling", "websocket"]
sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*", transports=TRANSPORTS)
app = web.Application()
sio.attach(app)
rooms = {}  # sid -> room name


def members(room):
    return [s for s, r in rooms.items() if r == room]


@sio.event
async def join(sid, room):
    count = len(members(room))
    if count == 0:
        rooms[sid] = room
        await sio.enter_room(sid, room)
        await sio.emit("created", room, to=sid)
    elif count == 1:
        rooms[sid] = room
        await sio.enter_room(sid, room)
        await sio.emit("joined", room, to=sid)
        await sio.emit("new_peer", room, room=room, skip_sid=sid)
    else:
        await sio.emit("full", room, to=sid)


async def relay(event, sid, data):
    room = rooms.get(sid)
    if room is not None:
        await sio.emit(event, data, room=room, skip_sid=sid)


@sio.event
async def invite(sid, data):
    await relay("invite", sid, data)


@sio.event
async def ok(sid, data):
    await relay("ok", sid, data)


@sio.event
async def ice_candidate(sid, data):
    await relay("ice_candidate", sid, data)


@sio.event
async def bye(sid, room=None):
    current = rooms.pop(sid, None)
    if current is not None:
        await sio.leave_room(sid, current)
        await sio.emit("bye", current, room=current, skip_sid=sid)


@sio.event
async def disconnect(sid, *_reason):
    rooms.pop(sid, None)


async def open_rooms(_request):
    return web.json_response(len(set(rooms.values())))


app.router.add_get("/rooms", open_rooms)


async def main():
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
