"""Holds slow clients against an authmd on loopback, for scripts/load-slow-clients.sh.

    python3 slow-clients.py PORT COUNT MODE SECONDS

COUNT connections stay attached for SECONDS: MODE `keepalive` sends one
request on each and then idles; `silent` sends nothing. A connection the
server closes (its timeouts) is opened again at once, so COUNT stay
attached throughout. One more client sends a request whose body trickles
in at a byte a second, and starts again whenever it is cut off. Prints
`attached N` once the connections are open, and what happened at the end
(or on SIGTERM).
Bounded: it stops by itself after SECONDS.
"""

import asyncio
import signal
import sys

HOST = "127.0.0.1"
PORT, COUNT, MODE, SECONDS = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
state = {"open": 0, "opened": 0, "closed_by_server": 0, "slow_cut": 0}
connecting = asyncio.Semaphore(200)


async def hold_one():
    while True:
        async with connecting:
            try:
                r, w = await asyncio.open_connection(HOST, PORT)
            except OSError:
                await asyncio.sleep(0.1)
                continue
        state["open"] += 1
        state["opened"] += 1
        try:
            if MODE == "keepalive":
                w.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
                await w.drain()
                await r.readuntil(b"ok")
            while await r.read(4096):
                pass
        except (OSError, asyncio.IncompleteReadError):
            pass
        state["open"] -= 1
        state["closed_by_server"] += 1
        w.close()


async def slow_body():
    while True:
        try:
            r, w = await asyncio.open_connection(HOST, PORT)
            w.write(b"POST /agent/auth HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                    b"content-length: 1000000\r\n\r\n{")
            await w.drain()
            while not r.at_eof():
                await asyncio.sleep(1)
                w.write(b" ")
                await w.drain()
        except OSError:
            pass
        state["slow_cut"] += 1
        await asyncio.sleep(0.1)


async def main():
    tasks = [asyncio.create_task(hold_one()) for _ in range(COUNT)]
    tasks.append(asyncio.create_task(slow_body()))
    loop = asyncio.get_running_loop()
    start = loop.time()
    while state["open"] < COUNT and loop.time() - start < 30:
        await asyncio.sleep(0.1)
    print(f"attached {state['open']}", flush=True)
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    try:
        await asyncio.wait_for(done.wait(), max(0.0, SECONDS - (loop.time() - start)))
    except asyncio.TimeoutError:
        pass
    print(f"held: open={state['open']} opened={state['opened']} "
          f"closed_by_server={state['closed_by_server']} slow_body_cut={state['slow_cut']}", flush=True)
    for t in tasks:
        t.cancel()


asyncio.run(main())
