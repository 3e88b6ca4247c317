"""A worker process: forked by ``gripd`` at start, or ``python -m gripd.runtime.worker
<socket fd> <admission fd>`` when the hub replaces a dead one (:mod:`gripd.runtime.spawn`).

Never started by hand. The first message on the socket
carries the configuration; the worker then runs an :class:`~gripd.runtime.app.App` in worker
mode (client listeners with SO_REUSEPORT, no publish inputs), reports ``ready`` (or its bind
error) and serves until the hub says stop, sends SIGTERM, or goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from typing import Any

# Imported at once, not after the hub's first message: the hub starts its workers before it
# imports its own modules, so both imports run at the same time.
from gripd.cli import run_loop, setup_logging
from gripd.core.errors import ConfigError
from gripd.io.bus.hub import Message, open_link
from gripd.io.listener.unix import LOCAL_FDS_MAX
from gripd.runtime.admission import Admission
from gripd.runtime.app import App, WorkerSetup

log = logging.getLogger("gripd")


async def serve(sock: socket.socket, admission_fd: int) -> int:
    loop = asyncio.get_running_loop()
    init: asyncio.Future[dict[str, Any]] = loop.create_future()
    pending: list[Message] = []
    handler: list[Any] = []  # the app's message handler, once it exists
    lost = asyncio.Event()
    # The hub's first byte carries the local_ports listening sockets (none most of the time);
    # read before the link takes the socket over. Blocking: nothing else runs yet.
    try:
        first_byte, fds, _, _ = socket.recv_fds(sock, 1, LOCAL_FDS_MAX)
    except OSError:
        return 1
    if not first_byte:
        return 1  # the hub went away before saying anything
    unix: list[socket.socket] = []
    for fd in fds:
        s = socket.socket(fileno=fd)
        s.setblocking(False)
        unix.append(s)

    def on_message(msg: Message) -> None:
        if msg[0] == "init":
            if not init.done():
                init.set_result(msg[1])
        elif handler:
            handler[0](msg)
        else:
            pending.append(msg)

    link = await open_link(sock, on_message, lost.set)
    waiter = loop.create_task(lost.wait())
    first: list[asyncio.Future[Any]] = [init, waiter]
    await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
    if not init.done():
        return 1  # the hub went away before saying anything
    setup = init.result()

    setup_logging(setup["log_level"], setup["logfile"], setup["config"].log_format)
    ports = setup["config"].local_ports
    if len(unix) != len(ports):  # the hub sends one listening socket per local_ports entry
        link.send(("ready", f"received {len(unix)} local_ports sockets for {len(ports)} ports"))
        link.flush()
        return 1
    admission = Admission(admission_fd, setup["count"], setup["index"])
    app = App(
        setup["config"],
        route_lines=setup["route_lines"],
        worker=WorkerSetup(
            setup["index"],
            setup["count"],
            link,
            admission,
            setup.get("generation", 0),
            tuple(zip(ports, unix, strict=True)),
        ),
    )
    handler.append(app.on_hub_message)
    for msg in pending:
        app.on_hub_message(msg)
    try:
        await app.start()
    except (OSError, ConfigError) as e:
        link.send(("ready", str(e)))
        link.flush()
        return 1
    link.send(("ready", None))
    stopper = loop.create_task(app.wait_stopped())
    await asyncio.wait([stopper, waiter], return_when=asyncio.FIRST_COMPLETED)
    if waiter.done() and not stopper.done():
        log.warning("worker %d: hub went away; stopping", setup["index"])
    stopper.cancel()
    waiter.cancel()
    await app.stop(quiet=True)
    link.close()
    return 0


def main(argv: list[str]) -> int:
    return run_worker(socket.socket(fileno=int(argv[0])), int(argv[1]))


def run_worker(sock: socket.socket, admission_fd: int) -> int:
    """Serve as a worker until told to stop (a fresh interpreter, or a child forked at start)."""
    # The hub decides when workers stop: Ctrl-C in a terminal reaches the whole process group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    code = 0

    async def go() -> None:
        nonlocal code
        code = await serve(sock, admission_fd)

    with contextlib.suppress(KeyboardInterrupt):
        run_loop(go())
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
