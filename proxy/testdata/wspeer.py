#!/usr/bin/python3
"""A WebSocket peer for the proxy's tests, built on Python's `websockets`
library (Debian: apt-get install python3-websockets). It talks to the test
through JSON lines: events on stdout, commands on stdin (client mode).

  wspeer.py server
      Listens on 127.0.0.1, a free port, with permessage-deflate (the
      library's default) and the subprotocols chat.v2 and chat.v1. Prints
      {"event":"listening","port":N}, then per connection
      {"event":"open",...} and {"event":"closed","code":C,"reason":R}.
      It echoes every message, except the text "close:CODE:REASON", on
      which it closes the connection with that code and reason.

  wspeer.py client URL [SUBPROTOCOL]
      Connects with permessage-deflate, prints {"event":"open",...}, then
      reads commands from stdin, one JSON object a line:
        {"send": "text"}   send a text message, print the reply as
                           {"event":"recv","data":...} (or, when the
                           server closes instead, {"event":"closed",...})
        {"close": CODE, "reason": "..."}  close, print {"event":"closed",...}
"""

import asyncio
import json
import sys

import websockets
import websockets.client
import websockets.server


def emit(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


def extensions(headers):
    return headers.get("Sec-WebSocket-Extensions")


async def handler(ws, path=None):
    emit(
        event="open",
        path=ws.path,
        subprotocol=ws.subprotocol,
        extensions=extensions(ws.response_headers),
        request_extensions=extensions(ws.request_headers),
    )
    try:
        async for msg in ws:
            if isinstance(msg, str) and msg.startswith("close:"):
                _, code, reason = msg.split(":", 2)
                await ws.close(int(code), reason)
                break
            await ws.send(msg)
    except websockets.ConnectionClosed:
        pass
    await ws.wait_closed()
    emit(event="closed", code=ws.close_code, reason=ws.close_reason)


async def server():
    srv = await websockets.server.serve(
        handler,
        "127.0.0.1",
        0,
        subprotocols=["chat.v2", "chat.v1"],
        compression="deflate",
        max_size=None,
        ping_interval=None,
    )
    emit(event="listening", port=srv.sockets[0].getsockname()[1])
    await asyncio.Future()  # until killed


async def client(url, subprotocol):
    loop = asyncio.get_running_loop()
    async with websockets.client.connect(
        url,
        subprotocols=[subprotocol] if subprotocol else None,
        compression="deflate",
        max_size=None,
        ping_interval=None,
    ) as ws:
        emit(
            event="open",
            subprotocol=ws.subprotocol,
            extensions=extensions(ws.response_headers),
        )
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            cmd = json.loads(line)
            if "send" in cmd:
                await ws.send(cmd["send"])
                try:
                    emit(event="recv", data=await ws.recv())
                except websockets.ConnectionClosed:
                    break
            elif "close" in cmd:
                await ws.close(cmd["close"], cmd.get("reason", ""))
                break
    emit(event="closed", code=ws.close_code, reason=ws.close_reason)


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "server":
        asyncio.run(server())
    elif len(sys.argv) >= 3 and sys.argv[1] == "client":
        asyncio.run(client(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
