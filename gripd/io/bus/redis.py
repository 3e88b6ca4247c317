"""The Redis bus: gripd instances sharing channels through Redis pub/sub.

Every batch is sent to Redis, one message per channel (``<key_prefix><channel>``, SPUBLISH on
Redis >= 7, else PUBLISH), and every instance that subscribed to the channel, the publisher
included, hands what comes back to its sink. So all instances see one order per channel: the
order in which Redis ran the publishes. This instance's publishes leave in call order: one
queue, one sender task, pipelined on one connection.

Redis may be down, at start too. Then ``start()`` still returns (once the first attempt failed,
or after ``START_WAIT`` seconds when Redis does not answer), the bus delivers every
batch locally (straight to the sink, like :class:`~gripd.io.bus.local.LocalBus`) and counts it
in ``counters["publish_failed"]``, and a supervisor reconnects with exponential backoff (0.1 s
doubling to 5 s). After a reconnect every wanted channel is subscribed again, and the bus goes
back to Redis only once Redis confirmed those subscriptions. Pub/sub has no backlog: what other
instances published while this one was cut off is lost for its subscribers.

When the connection drops, nothing this instance published is lost or doubled for its own
subscribers: a message it sent and expected back from Redis (its channel's subscription was
confirmed) is kept until it comes back; whatever did not come back, and whatever was queued or
unacknowledged, is delivered locally, in publish order, once the reader has stopped. Only the
unsent or unacknowledged messages count as ``publish_failed``.

A publish racing this instance's own subscribe (before Redis confirmed it) may not come back,
as for any remote publisher. Messages are data only (:mod:`gripd.core.itemwire`); one that does
not decode, or whose items name another channel, is dropped and counted in ``decode_errors``.

With history on (a default policy, or routes with history options), the messages of a batch
holding items with an id go through one Lua script call that stores the items in Redis Streams
and publishes the messages, in one step (:mod:`gripd.io.bus.redis_history`); ``history`` reads
those streams. With history
off the bus sends exactly what it sends without it.

``node_id`` must be unique among the instances sharing the Redis server: it tells this
instance's messages from the others'. The URL names one standalone server (or a proxy to one):
all subscriptions go on one connection, which Redis Cluster would refuse across slots.

Wildcard channels (``[gripd] wildcard_channels``): a wanted pattern (``news.*``) is
PSUBSCRIBEd, its prefix escaped for Redis's glob syntax. Sharded pub/sub has no pattern form
(SPUBLISH never reaches a PSUBSCRIBE), so with the option on the bus uses PUBLISH/SUBSCRIBE
even on Redis >= 7: every instance sharing the server must set the option alike. A publish
that matches several of this instance's subscriptions (``news.x`` and ``news.*``) comes back
once per subscription, one right after the other on the connection: the copies are dropped
(see :meth:`RedisBus._on_message`), so the sink gets each item once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio.connection import Connection, SSLConnection
from redis.exceptions import NoScriptError, ResponseError

from gripd.core.config_gripd import parse_bus_url
from gripd.core.history import OFF, HistoryPolicy
from gripd.core.itemwire import decode_message, encode_items
from gripd.core.publish import PublishItem
from gripd.core.wildcard import PrefixIndex, is_pattern, stem
from gripd.io.bus.base import BusSink
from gripd.io.bus.redis_history import RedisHistory, pack_pipeline

log = logging.getLogger("gripd.bus")

#: Reconnect delays: the first retry after this, doubling up to ``BACKOFF_MAX`` seconds.
BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0
#: Seconds to open a connection (TCP, TLS, AUTH, SELECT), and to wait for a reply.
CONNECT_TIMEOUT = 2.0
IO_TIMEOUT = 5.0
#: Seconds ``start`` waits for the first attempt to connect: a publish accepted right after
#: start then reaches Redis (and its history) instead of this instance's subscribers only.
START_WAIT = 2.0
#: The subscriber connection is pinged this often; silence for 3 intervals means it is dead.
PING_INTERVAL = 5.0
#: Publishes per pipelined write, and channels per (S)SUBSCRIBE command.
PIPELINE_MAX = 512
SUBSCRIBE_CHUNK = 1000
#: Seconds between two warnings of the same kind (the rest are counted and summed up).
LOG_EVERY = 10.0

_MESSAGE = (b"smessage", b"message")
_SUBSCRIBED = (b"ssubscribe", b"subscribe", b"psubscribe")
_UNSUBSCRIBED = (b"sunsubscribe", b"unsubscribe", b"punsubscribe")
_GLOB_SPECIAL = re.compile(rb"([\\*?\[\]])")
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._:@-]")


@dataclass(slots=True)
class _Out:
    """One message of this instance: a batch's items for one channel, encoded. With ``cmd``
    set, that command is sent instead of the plain publish (the history script); an *op*
    (``reply`` set, no items: a history read or policy) is a command whose reply, or the
    exception ending it, goes to ``reply``."""

    channel: str
    key: bytes
    items: list[PublishItem]
    source: str
    seq: int
    data: bytes
    expect_back: bool = False
    cmd: tuple[Any, ...] | bytes | int | None = None
    reply: Callable[[object], None] | None = None


class _Broken(Exception):
    """This connection epoch is over (the message says why)."""


class RedisBus:
    """A :class:`~gripd.io.bus.base.Bus` over Redis pub/sub (see the module docstring).

    Public state: ``connected`` (True while publishes go through Redis), ``counters``
    (``published``, ``received``, ``publish_failed``, ``decode_errors``, ``reconnects``: items,
    except ``decode_errors`` (messages) and ``reconnects``; with history: ``history_stored``
    (items added to a stream), ``history_write_errors`` (messages whose items a stream
    refused: published all the same), ``history_read_errors`` (reads answered ``gone``
    because Redis did not answer), ``history_skipped`` (stored entries that did not decode)),
    ``url_for_log`` (no password), ``sharded`` (SPUBLISH/SSUBSCRIBE in use; None before the
    first connect), ``history`` (the channels' history in Redis Streams, a
    :class:`~gripd.io.bus.redis_history.RedisHistory`)."""

    def __init__(
        self,
        sink: BusSink,
        url: str,
        *,
        node_id: str,
        loop: asyncio.AbstractEventLoop | None = None,
        key_prefix: str = "gripd:",
        sharded: bool | None = None,
        ping_interval: float = PING_INTERVAL,
        history: HistoryPolicy = OFF,
        history_routes: bool = False,
        wildcard: bool = False,
    ) -> None:
        """``url``: ``redis[s]://[user:password@]host[:port][/db]`` (raises ``ValueError`` if
        bad, see :func:`gripd.core.config_gripd.parse_bus_url`). ``node_id``: unique per instance.
        ``loop``: the loop to run on (default: the one running ``start()``). ``key_prefix``:
        prepended to channel names to make the Redis channel names (the same on every
        instance). ``sharded``: None = SPUBLISH/SSUBSCRIBE when the server has them (Redis >=
        7), True/False forces the choice (every instance sharing the server must make the
        same). ``ping_interval``: seconds between liveness PINGs. ``history``: the history
        policy of channels no route set one for; ``history_routes``: some route of this
        instance has history options (with both off, publishing is exactly as without
        history). ``wildcard``: channel names ending in ``*`` are patterns (PSUBSCRIBEd; forces
        PUBLISH/SUBSCRIBE, ``sharded=True`` is then a ValueError)."""
        scheme, host, port, db, user, password = parse_bus_url(url)
        if wildcard:
            if sharded:
                raise ValueError("sharded pub/sub has no pattern subscriptions")
            sharded = False
        self.wildcard = wildcard
        self._patterns: PrefixIndex[str] = PrefixIndex()  # stem -> wanted patterns
        self._last_data: bytes | None = None  # the last message handed on (copies dropped)
        self.sink = sink
        self.node_id = node_id
        self.key_prefix = key_prefix
        self._prefix = key_prefix.encode("utf-8", "surrogatepass")
        self._force_sharded = sharded
        self.sharded: bool | None = sharded
        self.ping_interval = ping_interval
        shown = f"[{host}]" if ":" in host else host
        cred = f"{user or ''}{':***' if password is not None else ''}"
        self.url_for_log = f"{scheme}://{cred + '@' if cred else ''}{shown}:{port}"
        if db:
            self.url_for_log += f"/{db}"
        self._conn_args: dict[str, Any] = {
            "host": host,
            "port": port,
            "db": db,
            "username": user,
            "password": password,
            "socket_connect_timeout": CONNECT_TIMEOUT,
            # RESP2: pub/sub messages are plain replies (RESP3 hides them as pushes).
            "protocol": 2,
            "client_name": _NAME_UNSAFE.sub("_", f"gripd-bus-{node_id}")[:200],
        }
        self._tls = scheme == "rediss"
        self._loop = loop
        self.connected = False
        self.counters: dict[str, int] = {
            "published": 0,
            "received": 0,
            "publish_failed": 0,
            "decode_errors": 0,
            "reconnects": 0,
            "history_stored": 0,
            "history_write_errors": 0,
            "history_read_errors": 0,
            "history_skipped": 0,
        }
        self._wanted: set[str] = set()
        self._changed: set[str] = set()  # wanted-ness changed since the last (un)subscribe sent
        self._requested: set[str] = set()  # subscribed (sent) on the current connection
        self._unconfirmed: dict[str, int] = {}  # channel -> (un)subscribe replies still due
        # PSUBSCRIBE glob -> its pattern, while the pattern is requested or a reply is due
        self._globs: dict[bytes, str] = {}
        self._outstanding = 0  # sum of _unconfirmed
        self._queue: deque[_Out] = deque()
        self._inflight: dict[int, _Out] = {}  # seq -> sent, not yet back (or not acknowledged)
        self._sending: deque[_Out] = deque()  # sent, reply not read yet (in order)
        self._seq = 0
        self._wake_send = asyncio.Event()
        self._wake_sub = asyncio.Event()
        self._progress = asyncio.Event()  # a subscription reply arrived, or the state changed
        self._tried = asyncio.Event()  # the first attempt to connect succeeded or failed
        self._broken: asyncio.Future[str] | None = None
        self._epoch: list[asyncio.Task[None]] = []
        self._conns: list[Connection] = []
        self._task: asyncio.Task[None] | None = None
        self._last_rx = 0.0
        self._last_log: dict[str, tuple[float, int]] = {}
        # channel -> callbacks waiting until its subscription is confirmed (history reads)
        self._waiters: dict[str, list[Callable[[], None]]] = {}
        self.history = RedisHistory(self, history, history_routes)
        self._hist_writes = False  # publishes go through the history script (set on connect)

    # -- the Bus protocol ------------------------------------------------------------------------

    def publish(self, items: list[PublishItem], *, source: str) -> None:
        """Send ``items`` through Redis, or deliver them locally when Redis is unreachable."""
        if not items:
            return
        if not self.connected:
            self.counters["publish_failed"] += len(items)
            self._warn("down", "bus: %s unreachable; delivering locally only", self.url_for_log)
            self.sink.publish(items, source=source)
            return
        groups: dict[str, list[PublishItem]] = {}
        for item in items:
            group = groups.get(item.channel)
            if group is None:
                groups[item.channel] = [item]
            else:
                group.append(item)
        outs: list[_Out] = []
        for channel, group in groups.items():
            self._seq += 1
            try:
                data = encode_items(group, self.node_id, source=source, seq=self._seq)
            except ValueError as e:
                self.counters["publish_failed"] += len(group)
                self._warn("encode", "bus: cannot send items of %r: %s", channel, e)
                self.sink.publish(group, source=source)
                continue
            key = self._prefix + channel.encode("utf-8", "surrogatepass")
            outs.append(_Out(channel, key, group, source, self._seq, data))
        if self._hist_writes:
            self.history.write_commands(outs)  # one script call stores and publishes them
        self._queue.extend(outs)
        self._wake_send.set()

    def subscribe(self, channel: str) -> None:
        """Want ``channel``: (S)SUBSCRIBE it soon (changes of one tick go in one command)."""
        if channel not in self._wanted:
            self._wanted.add(channel)
            self._changed.add(channel)
            self._wake_sub.set()
            if self.wildcard and is_pattern(channel):
                self._patterns.add(stem(channel), channel)

    def unsubscribe(self, channel: str) -> None:
        """Stop wanting ``channel``: its items are dropped from now on."""
        if channel in self._wanted:
            self._wanted.discard(channel)
            self._changed.add(channel)
            self._wake_sub.set()
            if self.wildcard and is_pattern(channel):
                self._patterns.remove(stem(channel), channel)
            # Acknowledged messages kept to be delivered locally on a drop are not wanted now.
            if self._inflight:
                unacked = {m.seq for m in self._sending}
                if self._patterns or (self.wildcard and is_pattern(channel)):
                    gone = [s for s, m in self._inflight.items() if not self._wants(m.channel)]
                else:
                    gone = [s for s, m in self._inflight.items() if m.channel == channel]
                for seq in gone:
                    if seq not in unacked:
                        del self._inflight[seq]
            if channel in self._waiters:
                self._wake_waiters(channel)

    # InterestListener, so the bus can be registered with the channel tracker directly.
    def gained(self, channel: str) -> None:
        self.subscribe(channel)

    def lost(self, channel: str) -> None:
        self.unsubscribe(channel)

    async def start(self, wait: float = START_WAIT) -> None:
        """Start connecting in the background, and return once the first attempt connected or
        failed, or after ``wait`` seconds (Redis not answering): gripd starts whether Redis is
        up or not, but when it is up, the instance is on the bus before it takes publishes."""
        if self._task is None:
            loop = self._loop or asyncio.get_running_loop()
            self._loop = loop
            self._task = loop.create_task(self._supervise(), name="redis-bus")
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._tried.wait()

    async def stop(self) -> None:
        """Close the connections and stop the tasks; what is still queued is delivered
        locally. Does not wait on an unreachable Redis."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.connected = False

    # -- for tests and health checks -------------------------------------------------------------

    def is_subscribed(self, channel: str) -> bool:
        """Whether Redis confirmed this instance's subscription to ``channel``."""
        return (
            self.connected
            and channel in self._requested
            and channel in self._wanted
            and not self._unconfirmed.get(channel)
        )

    async def settled(self, timeout: float = 10.0) -> None:
        """Wait until connected and every wanted channel's subscription is confirmed (raises
        ``TimeoutError`` past ``timeout`` seconds)."""
        async with asyncio.timeout(timeout):
            while not (self.connected and self._all_confirmed()):
                self._progress.clear()
                await self._progress.wait()

    # -- for the history ----------------------------------------------------------------------

    def _ready(self, channel: str) -> bool:
        """Connected, and subscribed to ``channel`` if it is wanted: whatever a read of its
        history misses will come in live."""
        return self.connected and (channel not in self._wanted or self.is_subscribed(channel))

    def _when_ready(self, channel: str, fn: Callable[[], None]) -> None:
        """Call ``fn`` once :meth:`_ready` holds for ``channel`` (at once if it does)."""
        if self._ready(channel):
            fn()
        else:
            self._waiters.setdefault(channel, []).append(fn)

    def _forget_waiter(self, channel: str, fn: Callable[[], None]) -> None:
        waiting = self._waiters.get(channel)
        if waiting is not None:
            with contextlib.suppress(ValueError):
                waiting.remove(fn)
            if not waiting:
                del self._waiters[channel]

    def _wake_waiters(self, channel: str) -> None:
        if self._ready(channel):
            for fn in self._waiters.pop(channel, ()):
                _call(fn)

    def _command(self, channel: str, cmd: tuple[Any, ...], reply: Callable[[object], None]) -> None:
        """Send ``cmd`` in turn with the publishes; its reply (or the exception ending it,
        ``ConnectionError`` when Redis is not connected) goes to ``reply``."""
        if not self.connected:
            _call(reply, ConnectionError("not connected"))
            return
        self._queue.append(_Out(channel, b"", [], "", 0, b"", cmd=cmd, reply=reply))
        self._wake_send.set()

    # -- the connection epochs -------------------------------------------------------------------

    def _all_confirmed(self) -> bool:
        return self._outstanding == 0 and not self._changed

    def _new_connection(self, socket_timeout: float | None) -> Connection:
        if self._tls:
            return SSLConnection(socket_timeout=socket_timeout, **self._conn_args)
        return Connection(socket_timeout=socket_timeout, **self._conn_args)

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        delay = BACKOFF_MIN
        down_since: float | None = None  # set while an outage is on (and was logged)
        ever_connected = False
        try:
            while True:
                try:
                    await self._open()
                except Exception as e:
                    await self._close()
                    self._tried.set()
                    if down_since is None:
                        down_since = loop.time()
                        log.error(
                            "bus: %s unreachable (%s); delivering locally only, retrying",
                            self.url_for_log,
                            _why(e),
                        )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, BACKOFF_MAX)
                    continue
                self.connected = True
                self._tried.set()
                self._progress.set()
                self.history.on_connect()
                if self._waiters:
                    for channel in list(self._waiters):
                        self._wake_waiters(channel)
                mode = "SPUBLISH" if self.sharded else "PUBLISH"
                if ever_connected:
                    self.counters["reconnects"] += 1
                if down_since is not None:
                    log.warning(
                        "bus: %s reachable again after %.1f s (%s); resubscribed %d channels",
                        self.url_for_log,
                        loop.time() - down_since,
                        mode,
                        len(self._wanted),
                    )
                else:
                    log.info("bus: connected to %s (%s)", self.url_for_log, mode)
                ever_connected = True
                began = loop.time()
                why = await self._watch()
                await self._close()
                down_since = loop.time()
                log.error(
                    "bus: %s lost (%s); delivering locally only, retrying", self.url_for_log, why
                )
                # After a long epoch retry at once (a restart, a failover); a connection that
                # keeps breaking soon after it was made is retried with the backoff.
                if loop.time() - began < BACKOFF_MAX:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, BACKOFF_MAX)
                else:
                    delay = BACKOFF_MIN
        finally:
            await self._close()

    async def _open(self) -> None:
        """Connect both connections, pick the publish command, resubscribe, and wait for the
        subscriptions to be confirmed (raises on any failure)."""
        loop = asyncio.get_running_loop()
        pub = self._new_connection(IO_TIMEOUT)
        sub = self._new_connection(None)  # the reader blocks; liveness comes from PINGs
        self._conns = [pub, sub]
        self._broken = loop.create_future()
        async with asyncio.timeout(CONNECT_TIMEOUT + IO_TIMEOUT):
            await pub.connect()  # type: ignore[no-untyped-call]
            await sub.connect()  # type: ignore[no-untyped-call]
            if self._force_sharded is None:
                self.sharded = await _has_spublish(pub)
            if self.history.enabled:
                await self.history.prepare(pub)
            self._hist_writes = self.history.enabled and self.history.usable
        self._requested.clear()
        self._unconfirmed.clear()
        self._globs.clear()
        self._outstanding = 0
        self._last_data = None
        self._changed = set(self._wanted)
        self._last_rx = loop.time()
        self._epoch = [
            loop.create_task(self._guard(self._read(sub)), name="redis-bus-read"),
            loop.create_task(self._guard(self._write_sub(sub)), name="redis-bus-subscribe"),
            loop.create_task(self._guard(self._send(pub)), name="redis-bus-send"),
        ]
        self._wake_sub.set()
        async with asyncio.timeout(IO_TIMEOUT):
            while not self._all_confirmed():
                if self._broken.done():
                    raise _Broken(self._broken.result())
                self._progress.clear()
                await self._progress.wait()

    async def _watch(self) -> str:
        """Wait for the epoch to break (a task failed, or the subscriber went silent)."""
        assert self._broken is not None
        loop = asyncio.get_running_loop()
        while True:
            done, _ = await asyncio.wait([self._broken], timeout=self.ping_interval)
            if done:
                return self._broken.result()
            if loop.time() - self._last_rx > 3 * self.ping_interval:
                return f"no reply to PING in {3 * self.ping_interval:g} s"

    async def _guard(self, work: Any) -> None:
        """Run one epoch task; its failure breaks the epoch."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if self._broken is not None and not self._broken.done():
                self._broken.set_result(_why(e))
            self._progress.set()

    async def _close(self) -> None:
        """End the epoch: stop its tasks, deliver locally what did not come back, close."""
        self.connected = False
        tasks, self._epoch = self._epoch, []
        for t in tasks:
            t.cancel()
        # Synchronously with the cancel, so no reply or message is handled after this and no
        # new publish overtakes these ones.
        self._flush_local()
        self._sending.clear()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(Exception):
                await c.disconnect(nowait=True)
        self._requested.clear()
        self._unconfirmed.clear()
        self._globs.clear()
        self._outstanding = 0
        self._progress.set()

    def _flush_local(self) -> None:
        failed = sum(len(m.items) for m in self._sending) + sum(len(m.items) for m in self._queue)
        ops = [m for m in self._sending if m.reply is not None]
        ops += [m for m in self._queue if m.reply is not None]
        pending = list(self._inflight.values())
        pending += [m for m in self._queue if m.reply is None] if ops else self._queue
        self._inflight.clear()
        self._sending.clear()
        self._queue.clear()
        if failed:
            self.counters["publish_failed"] += failed
            self._warn("flush", "bus: %d items not sent to Redis, delivered locally", failed)
        for m in pending:
            self._deliver(m.items, m.source)
        for m in ops:
            assert m.reply is not None
            _call(m.reply, ConnectionError("the connection to Redis was lost"))

    def _deliver(self, items: list[PublishItem], source: str) -> None:
        try:
            self.sink.publish(items, source=source)
        except Exception:
            log.exception("bus: delivering %d items failed", len(items))

    # -- the epoch tasks -------------------------------------------------------------------------

    async def _send(self, conn: Connection) -> None:
        """The one writer of publishes: the queue in order, pipelined."""
        while True:
            if not self._queue:
                self._wake_send.clear()
                await self._wake_send.wait()
                continue
            n = min(len(self._queue), PIPELINE_MAX)
            while n < len(self._queue) and isinstance(self._queue[n].cmd, int):
                n += 1  # the messages of one script call go together
            batch = [self._queue.popleft() for _ in range(n)]
            self._sending.extend(batch)
            command = b"SPUBLISH" if self.sharded else b"PUBLISH"
            for m in batch:
                if m.reply is None:
                    m.expect_back = self._comes_back(m.channel)
                    self._inflight[m.seq] = m
            packed = pack_pipeline(
                conn, [(command, m.key, m.data) if m.cmd is None else m.cmd for m in batch]
            )
            await conn.send_packed_command(packed, check_health=False)
            shared: object = None  # the reply of the last script call (or command)
            for m in batch:
                try:
                    if not isinstance(m.cmd, int):  # else: in the script call before it
                        try:
                            shared = await conn.read_response()
                        except ResponseError as e:
                            shared = e
                    reply = shared
                    if isinstance(reply, ResponseError):
                        raise reply
                    if m.cmd is not None and m.reply is None:
                        refused = self.history.stored(m, reply)
                        if refused is not None:
                            raise ResponseError(refused)
                except NoScriptError:
                    # The server lost the scripts (SCRIPT FLUSH): reconnect, which loads them
                    # again. This message and the rest are delivered locally (as on a drop).
                    raise _Broken("Redis lost the history scripts (SCRIPT FLUSH?)") from None
                except ResponseError as e:
                    self._sending.popleft()
                    if m.reply is not None:
                        _call(m.reply, e)
                        continue
                    # Refused (ACL...): it will not come back; deliver it here.
                    self.counters["publish_failed"] += len(m.items)
                    self._warn("refused", "bus: Redis refused a publish: %s", e)
                    if self._inflight.pop(m.seq, None) is not None:
                        self._deliver(m.items, m.source)
                    continue
                self._sending.popleft()
                if m.reply is not None:
                    _call(m.reply, reply)
                    continue
                self.counters["published"] += len(m.items)
                if not m.expect_back or not self._wants(m.channel):
                    self._inflight.pop(m.seq, None)

    async def _write_sub(self, conn: Connection) -> None:
        """The one writer of the subscriber connection: (un)subscribes, and the PINGs."""
        loop = asyncio.get_running_loop()
        last_ping = loop.time()
        while True:
            if not self._changed:
                self._wake_sub.clear()
                wait = last_ping + self.ping_interval - loop.time()
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await self._wake_sub.wait()
                if not self._changed:
                    if loop.time() - last_ping >= self.ping_interval:
                        await conn.send_command("PING", check_health=False)
                        last_ping = loop.time()
                    continue
            changed, self._changed = self._changed, set()
            add = [c for c in changed if c in self._wanted and c not in self._requested]
            drop = [c for c in changed if c not in self._wanted and c in self._requested]
            self._requested.update(add)
            self._requested.difference_update(drop)
            for c in add + drop:
                self._unconfirmed[c] = self._unconfirmed.get(c, 0) + 1
            self._outstanding += len(add) + len(drop)
            sub, unsub = (
                (b"SSUBSCRIBE", b"SUNSUBSCRIBE") if self.sharded else (b"SUBSCRIBE", b"UNSUBSCRIBE")
            )
            commands: list[tuple[bytes, ...]] = []
            if self.wildcard:
                padd = [c for c in add if is_pattern(c)]
                pdrop = [c for c in drop if is_pattern(c)]
                if padd or pdrop:
                    add = [c for c in add if not is_pattern(c)]
                    drop = [c for c in drop if not is_pattern(c)]
                    for verb, chans in ((b"PSUBSCRIBE", padd), (b"PUNSUBSCRIBE", pdrop)):
                        commands += _chunked(verb, [self._pkey(c) for c in chans])
            for verb, chans in ((sub, add), (unsub, drop)):
                commands += _chunked(verb, [self._key(c) for c in chans])
            if commands:
                await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
            self._progress.set()

    async def _read(self, conn: Connection) -> None:
        """The reader of the subscriber connection: messages, confirmations, PONGs."""
        loop = asyncio.get_running_loop()
        while True:
            reply = await conn.read_response()
            self._last_rx = loop.time()
            if not isinstance(reply, list) or len(reply) < 3:
                continue  # PONG (or the subscribed form [b"pong", b""])
            kind = reply[0]
            if kind in _MESSAGE:
                self._on_message(reply[1], reply[2])
            elif kind == b"pmessage" and len(reply) >= 4:
                self._on_message(reply[2], reply[3], reply[1])
            elif kind in _SUBSCRIBED or kind in _UNSUBSCRIBED:
                self._on_confirmation(reply[1], kind[0] == 112)  # b"p..."

    def _on_confirmation(self, key: object, pattern: bool = False) -> None:
        channel = self._pattern_of(key) if pattern else self._channel_of(key)
        left = self._unconfirmed.get(channel) if channel is not None else None
        if channel is None or left is None:
            return
        if left > 1:
            self._unconfirmed[channel] = left - 1
        else:
            del self._unconfirmed[channel]
            if pattern and isinstance(key, bytes) and channel not in self._requested:
                del self._globs[key]  # PUNSUBSCRIBEd and confirmed: nothing more comes for it
        self._outstanding -= 1
        self._progress.set()
        if channel in self._waiters:
            self._wake_waiters(channel)

    def _on_message(self, key: object, data: object, pkey: object = None) -> None:
        """A message on channel ``key`` (through pattern ``pkey`` for a pmessage). Redis
        sends a publish to each matching subscription of this connection in a row, so a copy
        of the message just handed on is one of those: dropped."""
        channel = self._channel_of(key)
        if channel is None or not isinstance(data, bytes):
            self._bad(f"channel {key!r} is not one of this bus")
            return
        if self.wildcard:
            if data == self._last_data:
                return
            if pkey is not None:
                pattern = self._pattern_of(pkey)
                wanted = pattern is not None and pattern in self._wanted
            else:
                wanted = channel in self._wanted
        else:
            wanted = channel in self._wanted
        try:
            msg = decode_message(data)
        except ValueError as e:
            self._bad(f"{channel!r}: {e}")
            return
        if any(item.channel != channel for item in msg.items):
            self._bad(f"{channel!r}: holds items of another channel")
            return
        if msg.node == self.node_id:
            self._inflight.pop(msg.seq, None)
        if wanted and msg.items:
            if self.wildcard:
                self._last_data = data
            self.counters["received"] += len(msg.items)
            self._deliver(msg.items, msg.source)

    # -- helpers ---------------------------------------------------------------------------------

    def _key(self, channel: str) -> bytes:
        return self._prefix + channel.encode("utf-8", "surrogatepass")

    def _pkey(self, pattern: str) -> bytes:
        """The PSUBSCRIBE glob of a pattern: its prefixed stem, escaped, then ``*`` (noted
        for :meth:`_pattern_of`)."""
        glob = _GLOB_SPECIAL.sub(rb"\\\1", self._key(stem(pattern))) + b"*"
        self._globs[glob] = pattern
        return glob

    def _pattern_of(self, pkey: object) -> str | None:
        """The pattern a PSUBSCRIBE glob made by :meth:`_pkey` stands for."""
        return self._globs.get(pkey) if isinstance(pkey, bytes) else None

    def _wants(self, channel: str) -> bool:
        """Whether items of ``channel`` are wanted here (held, or matched by a held pattern)."""
        if channel in self._wanted:
            return True
        return bool(self._patterns) and any(True for _ in self._patterns.matching_prefixes(channel))

    def _comes_back(self, channel: str) -> bool:
        """Whether a publish on ``channel`` will come back to this instance: its subscription,
        or a matching pattern's, is confirmed."""
        if self.is_subscribed(channel):
            return True
        if not self._patterns:
            return False
        return any(
            self.is_subscribed(p)
            for s in self._patterns.matching_prefixes(channel)
            for p in self._patterns.members(s)
        )

    def _channel_of(self, key: object) -> str | None:
        if not isinstance(key, bytes) or not key.startswith(self._prefix):
            return None
        try:
            return key[len(self._prefix) :].decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return None

    def _bad(self, why: str) -> None:
        self.counters["decode_errors"] += 1
        self._warn("decode", "bus: dropped a message from Redis: %s", why)

    def _warn(self, kind: str, msg: str, *args: object) -> None:
        """``log.warning`` at most once per ``LOG_EVERY`` seconds per ``kind``."""
        now = time.monotonic()
        last, skipped = self._last_log.get(kind, (-LOG_EVERY, 0))
        if now - last < LOG_EVERY:
            self._last_log[kind] = (last, skipped + 1)
            return
        self._last_log[kind] = (now, 0)
        if skipped:
            msg += f" (and {skipped} more like it)"
        log.warning(msg, *args)


async def _has_spublish(conn: Connection) -> bool:
    """Whether the server knows SPUBLISH (Redis >= 7): ``COMMAND INFO`` answers null if not."""
    await conn.send_command("COMMAND", "INFO", "SPUBLISH", check_health=False)
    try:
        reply = await conn.read_response()
    except ResponseError:  # no COMMAND (very old), or COMMAND not allowed: plain PUBLISH
        return False
    return isinstance(reply, list) and bool(reply) and reply[0] is not None


def _chunked(verb: bytes, keys: list[bytes]) -> list[tuple[bytes, ...]]:
    """``verb`` commands for ``keys``, at most :data:`SUBSCRIBE_CHUNK` keys each."""
    return [(verb, *keys[i : i + SUBSCRIBE_CHUNK]) for i in range(0, len(keys), SUBSCRIBE_CHUNK)]


def _call(fn: Callable[..., None], *args: object) -> None:
    """Call a history callback; its failure is logged, never breaks the connection."""
    try:
        fn(*args)
    except Exception:
        log.exception("bus: a history callback failed")


def _why(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:200]
