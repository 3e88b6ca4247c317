"""Per-channel history in Redis Streams, for the Redis bus: every instance sharing the server
reads and writes one history.

Keys (under the bus's prefix, ``gripd:`` or ``gripd:N:``): ``<prefix>h:<channel>``, a stream of
the channel's items, one entry per item with an id (fields ``i``, the item id, and ``d``, a bus
message holding that one item, :mod:`gripd.core.itemwire`); ``<prefix>hp:<channel>``, the
channel's policy when a route set one (``"<size> <ttl ms>"``; absent = the instance's default).

**Writing.** With history possible on this instance, the messages of a published batch (one
per channel) go, when some item has an id, through one Lua script call instead of the plain
(S)PUBLISHes (several calls for a batch of more than ``GROUP_MAX`` channels or
``GROUP_ITEMS_MAX`` items). For each channel in turn it reads the policy (one ``MGET`` for the
call), ``XADD``s each item with an id (``MAXLEN ~ size``), sets the stream to expire ``ttl``
after its last item, then (S)PUBLISHes the same message the bus sends without history. Redis
runs a script whole, so the stream's order is the order in which every subscriber gets the
messages, whichever instance published. The call is packed here, not by redis-py (whose packer
cost more than the rest of the publish path), and its one reply answers every message in it.

Trimming is approximate (``~``, cheaper than exact): Redis drops whole blocks of entries (by
default at most 100 entries or 4 kB each), so a stream holds ``size`` entries or up to about
one block more; reads look at the newest ``size`` entries only, so what a client sees is the
same as with exact trimming. Entries older than the ttl are not trimmed on write (that would
cost a third more per item): reads skip them, and a channel not published to for ``ttl``
seconds loses its stream.

**Reading** is one script too: it scans the stream newest-first, at most ``size`` entries and
none older than the ttl (auto stream ids are the server's clock in ms), for the item id the
client last saw, and returns what came after it, oldest first. For a channel this instance
holds, it runs only once Redis confirmed the bus's subscription to the channel: any item
missing from the answer was published after the read, so it reaches the bus live (it may
also be in the answer: the reader drops repeats).

Redis 6.2 or later is needed (exclusive ranges in ``XREVRANGE``); with an older server, or one
that refuses scripts, nothing is stored, reads answer ``gone`` and an error is logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, cast

from redis.asyncio.connection import Connection
from redis.exceptions import ResponseError

from gripd.core.history import OFF, READ_LIMIT_MAX, HistoryPolicy, Replay
from gripd.core.itemwire import decode_message, encode_items
from gripd.core.publish import PublishItem

if TYPE_CHECKING:
    from gripd.io.bus.redis import RedisBus, _Out

log = logging.getLogger("gripd.bus")

#: Seconds a read may take (waiting for the subscription, Redis answering) before it is ``gone``.
READ_TIMEOUT: Final = 2.0
#: A policy key lives at least this long (ms) after it was set or its channel was published to.
POLICY_KEEP_MS: Final = 86_400_000
#: An unchanged policy is set again in Redis at most this often (seconds).
POLICY_REFRESH: Final = 3600.0
#: Channels whose policy this instance remembers having set (the oldest is forgotten first).
POLICY_CACHE_MAX: Final = 10_000
#: Channels, and items, per write script call (a publish batch with more is sent in several
#: calls; Redis serves no other client while a script runs, about 5 µs per item).
GROUP_MAX: Final = 200
GROUP_ITEMS_MAX: Final = 1000
#: Channels whose keys are kept packed (all are forgotten when it is full).
KEY_CACHE_MAX: Final = 10_000

# KEYS: the n channels' streams, then their n policies. ARGV: default size, default ttl (ms),
# publish command, then per channel: pub/sub channel, message, k, then k (item id, entry data)
# pairs; empty data means the message itself (a one-item message). Returns one entry per
# channel: the number of entries added, or {added, why} when the stream refused one (a key of
# another type; the message is published all the same), or {added, why, publish error} when
# the message could not be published. The policies come in one MGET; every redis.call is on
# the keys of one channel, in channel order.
WRITE_SCRIPT: Final = b"""
local size0, ttl0, cmd = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local nch = #KEYS / 2
local pol = redis.call('MGET', unpack(KEYS, nch + 1, 2 * nch))
local out, a = {}, 4
for c = 1, nch do
  local size, ttl = size0, ttl0
  local p = pol[c]
  if type(p) == 'string' then
    local s, t = string.match(p, '^(%d+) (%d+)$')
    if s then
      size, ttl = tonumber(s), tonumber(t)
      redis.call('PEXPIRE', KEYS[nch + c], math.max(ttl, 86400000))
    end
  end
  local data, k = ARGV[a + 1], tonumber(ARGV[a + 2])
  local n, err = 0, false
  if size > 0 and k > 0 then
    for j = a + 3, a + 1 + 2 * k, 2 do
      local d = ARGV[j + 1]
      if d == '' then d = data end
      local r = redis.pcall('XADD', KEYS[c], 'MAXLEN', '~', size, '*', 'i', ARGV[j], 'd', d)
      if type(r) == 'table' and r.err then
        err = r.err
        break
      end
      n = n + 1
    end
    if ttl > 0 and n > 0 then redis.call('PEXPIRE', KEYS[c], ttl) end
  end
  local r = redis.pcall(cmd, ARGV[a], data)
  if type(r) == 'table' and r.err then
    out[c] = {n, err or '', r.err}
  elseif err then
    out[c] = {n, err}
  else
    out[c] = n
  end
  a = a + 3 + 2 * k
end
return out
"""

# KEYS: stream, policy. ARGV: default size, default ttl (ms), has after (1/0), after, limit.
# Returns {'off'}, or {status, has top (1/0), top, number of ids, ids..., data...}: status 'ok'
# with the entries' data after ``after`` (the newest ``limit`` when there is no after), oldest
# first, or 'gone'. The ids are those stored when the script ran (``Replay.known``): the whole
# window when ``after`` is gone, else the entries after it, it, and up to KNOWN_BELOW older ones.

READ_SCRIPT: Final = b"""
local size, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local p = redis.pcall('GET', KEYS[2])
if type(p) == 'string' then
  local s, t = string.match(p, '^(%d+) (%d+)$')
  if s then size, ttl = tonumber(s), tonumber(t) end
end
if size <= 0 then return {'off'} end
local low = '-'
if ttl > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  low = string.format('%.0f', now - ttl + 1)
end
local limit = tonumber(ARGV[5])
local function fields(f)
  local i, d = false, ''
  for q = 1, #f - 1, 2 do
    if f[q] == 'i' then i = f[q + 1] elseif f[q] == 'd' then d = f[q + 1] end
  end
  return i, d
end
local hi, n, chunk = '+', 0, 100
local seen, ids, top = {}, {}, false
local after = ARGV[3] == '1' and ARGV[4] or nil
while n < size do
  local want = math.min(chunk, size - n)
  if not after then want = math.min(size, math.max(limit, 1)) end
  local e = redis.call('XREVRANGE', KEYS[1], hi, low, 'COUNT', want)
  for j = 1, #e do
    local i, d = fields(e[j][2])
    n = n + 1
    if n == 1 then top = i end
    ids[n] = i
    if after and i == after then
      local below = redis.call('XREVRANGE', KEYS[1], '(' .. e[j][1], low, 'COUNT',
        math.max(1, math.min(size - n, 1000)))
      for q = 1, #below do
        local bi = fields(below[q][2])
        ids[#ids + 1] = bi
      end
      local out = {'ok', top and 1 or 0, top or '', #ids}
      for q = 1, #ids do out[#out + 1] = ids[q] or '' end
      for k = n - 1, math.max(1, n - limit), -1 do out[#out + 1] = seen[k] end
      return out
    end
    seen[n] = d
  end
  if not after or #e < want then break end
  hi = '(' .. e[#e][1]
  chunk = math.min(chunk * 2, 1000)
end
if after then
  local out = {'gone', top and 1 or 0, top or '', #ids}
  for q = 1, #ids do out[#out + 1] = ids[q] or '' end
  return out
end
local out = {'ok', top and 1 or 0, top or '', 0}
for k = math.min(n, limit), 1, -1 do out[#out + 1] = seen[k] end
return out
"""

WRITE_SHA: Final = hashlib.sha1(WRITE_SCRIPT).hexdigest()
READ_SHA: Final = hashlib.sha1(READ_SCRIPT).hexdigest()

ReplayDone = Callable[[Replay], None]


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _policy_value(policy: HistoryPolicy) -> bytes:
    return f"{max(0, policy.size)} {_ms(policy.ttl)}".encode()


class RedisHistory:
    """The :class:`~gripd.io.handler.history.HistoryReader` of a :class:`RedisBus` (its
    ``history`` attribute; see the module docstring).

    ``default``: the policy of channels no route set one for. ``routes``: some route of this
    instance has history options. When neither can turn history on (``enabled`` False),
    publishing is exactly as without history and every read answers ``off``, until a policy
    with history is set (a route with history options appeared in reloaded routes)."""

    def __init__(self, bus: RedisBus, default: HistoryPolicy = OFF, routes: bool = False) -> None:
        self.bus = bus
        self.default = default
        self.enabled = default.on or routes
        #: The server runs the scripts (checked at each connect; False until then).
        self.usable = False
        self._prepared = False  # prepare() ran for the connection being opened
        self._size = str(max(0, default.size)).encode()
        self._ttl = str(_ms(default.ttl)).encode()
        self._policies: OrderedDict[str, tuple[HistoryPolicy, float]] = OrderedDict()
        # The write script call's constant parts, packed: the head up to the number of keys, and
        # the arguments after the keys (default size and ttl, then the publish command).
        self._head = _bulk(b"EVALSHA") + _bulk(WRITE_SHA.encode())
        self._mid = _bulk(self._size) + _bulk(self._ttl) + _bulk(b"PUBLISH")
        self._mid_sharded = _bulk(self._size) + _bulk(self._ttl) + _bulk(b"SPUBLISH")
        self._keys: dict[str, tuple[bytes, bytes]] = {}  # channel -> its keys, packed

    # -- keys ------------------------------------------------------------------------------------

    def stream_key(self, channel: str) -> bytes:
        return self.bus._prefix + b"h:" + channel.encode("utf-8", "surrogatepass")

    def policy_key(self, channel: str) -> bytes:
        return self.bus._prefix + b"hp:" + channel.encode("utf-8", "surrogatepass")

    # -- connecting ------------------------------------------------------------------------------

    async def prepare(self, conn: Connection) -> None:
        """On a new connection (before any publish): check the server and load the scripts.
        Raises on a connection failure only."""
        self.usable = False
        self._prepared = True
        await conn.send_command("INFO", "server", check_health=False)
        try:
            version = _server_version(await conn.read_response())
        except ResponseError:  # INFO not allowed: find out from the scripts
            version = None
        if version is not None and version < (6, 2):
            log.error(
                "bus: %s runs Redis %s; history needs 6.2 or later: nothing is stored",
                self.bus.url_for_log,
                ".".join(map(str, version)),
            )
            return
        commands: list[tuple[Any, ...]] = [
            (b"SCRIPT", b"LOAD", WRITE_SCRIPT),
            (b"SCRIPT", b"LOAD", READ_SCRIPT),
        ]
        await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
        problem = None
        for _ in commands:
            try:
                await conn.read_response()
            except ResponseError as e:
                problem = problem or str(e)
        if problem is not None:
            log.error(
                "bus: %s refused the history scripts (%s): nothing is stored",
                self.bus.url_for_log,
                problem,
            )
            return
        self.usable = True

    # -- writing ---------------------------------------------------------------------------------

    def write_commands(self, outs: list[_Out]) -> None:
        """Set the ``cmd`` of one publish batch's messages ``outs`` (one per channel, queued
        together): when some item has an id, the messages go in script calls of up to
        ``GROUP_MAX`` channels and ``GROUP_ITEMS_MAX`` items each (a message with more items
        alone), the first message of a call holding it pre-packed (bytes) and the others their
        place in it (int, see :func:`pack_pipeline`). Else (or when the server cannot run the
        script) nothing is set: the plain publishes are sent."""
        if not self.usable or not any(i.id is not None for o in outs for i in o.items):
            return
        group: list[_Out] = []
        items = 0
        for out in outs:
            if group and (len(group) >= GROUP_MAX or items + len(out.items) > GROUP_ITEMS_MAX):
                group[0].cmd = self._script_call(group)
                group, items = [], 0
            out.cmd = len(group)
            group.append(out)
            items += len(out.items)
        group[0].cmd = self._script_call(group)

    def _script_call(self, outs: list[_Out]) -> bytes:
        """The write script's call for ``outs``, packed in the Redis protocol here: redis-py's
        packer costs about 1 µs per argument, more than the rest of the publish path."""
        n = len(outs)
        streams: list[bytes] = []
        policies: list[bytes] = []
        body: list[bytes] = [self._mid_sharded if self.bus.sharded else self._mid]
        argc = 6 + 2 * n
        keys = self._keys
        for out in outs:
            channel = out.channel
            ck = keys.get(channel)
            if ck is None:
                if len(keys) >= KEY_CACHE_MAX:
                    keys.clear()
                ck = keys[channel] = (
                    _bulk(self.stream_key(channel)),
                    _bulk(self.policy_key(channel)),
                )
            streams.append(ck[0])
            policies.append(ck[1])
            items = out.items
            data = out.data
            body += (_bulk(out.key), _bulk(data))
            if len(items) == 1:  # the message is the entry's data (sent once)
                iid = items[0].id
                if iid is None:
                    body.append(b"$1\r\n0\r\n")
                    argc += 3
                else:
                    body += (b"$1\r\n1\r\n", _bulk(iid.encode("utf-8", "surrogatepass")))
                    body.append(b"$0\r\n\r\n")
                    argc += 5
                continue
            pairs: list[bytes] = []
            for item in items:
                if item.id is not None:
                    one = encode_items([item], self.bus.node_id, source=out.source, seq=out.seq)
                    pairs += (_bulk(item.id.encode("utf-8", "surrogatepass")), _bulk(one))
            body.append(_bulk(str(len(pairs) // 2).encode()))
            body += pairs
            argc += 3 + len(pairs)
        head = b"*%d\r\n%s%s" % (argc, self._head, _bulk(str(2 * n).encode()))
        return b"".join((head, *streams, *policies, *body))

    def stored(self, out: _Out, reply: object) -> str | None:
        """The write script's reply for the call that held ``out``: count what was stored,
        warn of a failure. Returns why ``out`` was not published (Redis refused it), else
        None."""
        counters = self.bus.counters
        k = out.cmd if isinstance(out.cmd, int) else 0
        entry = reply[k] if isinstance(reply, list) and k < len(reply) else None
        if isinstance(entry, int):
            counters["history_stored"] += entry
            return None
        if isinstance(entry, list) and len(entry) >= 2 and isinstance(entry[0], int):
            counters["history_stored"] += entry[0]
            why = _text(entry[1])
            refused = _text(entry[2]) if len(entry) >= 3 else None
            if not why:
                return refused or "refused"
        else:
            why, refused = "unexpected reply", None
        counters["history_write_errors"] += 1
        self.bus._warn("history-write", "bus: history of %r not stored: %s", out.channel, why)
        return refused

    # -- policies --------------------------------------------------------------------------------

    def set_policy(self, channel: str, policy: HistoryPolicy) -> None:
        """A route's history settings for ``channel``, for every instance: set in Redis unless
        this instance set the same within ``POLICY_REFRESH`` seconds."""
        if not self.enabled:
            if not policy.on:
                return
            self._enable()
        now = asyncio.get_running_loop().time()
        cache = self._policies
        known = cache.get(channel)
        if known is not None and known[0] == policy and now - known[1] < POLICY_REFRESH:
            return
        cache[channel] = (policy, now)
        cache.move_to_end(channel)
        if len(cache) > POLICY_CACHE_MAX:
            cache.popitem(last=False)
        if not (self.bus.connected and self.usable):
            return  # set when the bus connects

        def reply(r: object) -> None:
            if isinstance(r, ResponseError) and cache.get(channel) == (policy, now):
                del cache[channel]  # refused: try again at the next call
                log.warning("bus: Redis refused a history policy: %s", r)

        self.bus._command(channel, self._set_command(channel, policy), reply)

    def on_connect(self) -> None:
        """The bus is connected (nothing is queued yet): set again the policies this instance
        set (Redis may have restarted empty), before any publish of the new connection."""
        prepared, self._prepared = self._prepared, False
        if not self.enabled:
            return
        if not prepared:  # enabled while the connection was being opened
            self._load()
        if self.usable:
            for channel, (policy, _) in self._policies.items():
                self.bus._command(channel, self._set_command(channel, policy), _ignore)

    def _enable(self) -> None:
        """Turn history on for this instance (loading the scripts now if connected)."""
        self.enabled = True
        log.info("bus: history on (a route's history options)")
        if self.bus.connected:
            self._load()

    def _load(self) -> None:
        """Load the scripts on the live connection, ahead of the publishes that use them."""
        bus = self.bus
        self.usable = True
        bus._hist_writes = True

        def loaded(r: object) -> None:
            if isinstance(r, ResponseError) and self.usable:
                self.usable = False
                bus._hist_writes = False
                log.error("bus: %s refused the history scripts (%s)", bus.url_for_log, r)

        for script in (WRITE_SCRIPT, READ_SCRIPT):
            bus._command("", (b"SCRIPT", b"LOAD", script), loaded)

    def _set_command(self, channel: str, policy: HistoryPolicy) -> tuple[Any, ...]:
        keep = max(_ms(policy.ttl), POLICY_KEEP_MS)
        return (b"SET", self.policy_key(channel), _policy_value(policy), b"PX", keep)

    # -- reading ---------------------------------------------------------------------------------

    def read(self, channel: str, after: str | None, limit: int, done: ReplayDone) -> None:
        """Answer through ``done`` (on the event loop) with what came after ``after`` (see
        :class:`~gripd.io.handler.history.HistoryReader`); ``gone`` when Redis does not answer
        within ``READ_TIMEOUT`` seconds."""
        if not self.enabled:
            done(Replay("off"))
            return
        limit = max(0, min(limit, READ_LIMIT_MAX))
        _Read(self, channel, after, limit, done).start()

    def _error(self, channel: str, why: str) -> None:
        self.bus.counters["history_read_errors"] += 1
        self.bus._warn("history", "bus: history read of %r failed: %s", channel, why)

    def _decode(self, channel: str, reply: list[Any]) -> Replay:
        """A read script's reply as a :class:`Replay` (entries that do not decode are skipped)."""
        status = reply[0]
        if status == b"off":
            return Replay("off")
        top = _text(reply[2]) if reply[1] == 1 else None
        n = int(reply[3])
        known = frozenset(t for i in reply[4 : 4 + n] if (t := _text(i)))
        if status != b"ok":
            return Replay("gone", (), top, known)
        items: list[PublishItem] = []
        for data in reply[4 + n :]:
            try:
                got = decode_message(data).items if isinstance(data, bytes) else []
            except ValueError as e:
                self._skip(channel, str(e))
                continue
            if len(got) != 1 or got[0].channel != channel or got[0].id is None:
                self._skip(channel, "not one item of this channel with an id")
                continue
            items.append(got[0])
        return Replay("ok", tuple(items), top, known)

    def _skip(self, channel: str, why: str) -> None:
        self.bus.counters["history_skipped"] += 1
        self.bus._warn("history-entry", "bus: skipped a history entry of %r: %s", channel, why)


class _Read:
    """One read: waits (bounded) until the bus can run it without a gap, then asks Redis."""

    __slots__ = ("after", "channel", "done", "history", "limit", "timer")

    def __init__(
        self, history: RedisHistory, channel: str, after: str | None, limit: int, done: ReplayDone
    ) -> None:
        self.history = history
        self.channel = channel
        self.after = after
        self.limit = limit
        self.done: ReplayDone | None = done
        self.timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        # While Redis is unreachable (at start, or reconnecting) this waits for it, bounded.
        self.timer = asyncio.get_running_loop().call_later(READ_TIMEOUT, self.expire)
        self.history.bus._when_ready(self.channel, self.send)

    def expire(self) -> None:
        self.timer = None
        self.history.bus._forget_waiter(self.channel, self.send)
        bus = self.history.bus
        self.answer(
            None, f"no answer in {READ_TIMEOUT:g} s" if bus.connected else "Redis is unreachable"
        )

    def send(self) -> None:
        """The bus is connected and subscribed to the channel (if it holds it): ask."""
        if self.done is None:
            return
        h = self.history
        if not (h.bus.connected and h.usable):
            self.answer(None, "Redis is unreachable" if not h.bus.connected else "no scripts")
            return
        after = self.after
        command = (
            b"EVALSHA",
            READ_SHA,
            2,
            h.stream_key(self.channel),
            h.policy_key(self.channel),
            h._size,
            h._ttl,
            b"0" if after is None else b"1",
            b"" if after is None else after.encode("utf-8", "surrogatepass"),
            self.limit,
        )
        h.bus._command(self.channel, command, self.reply)

    def reply(self, r: object) -> None:
        if self.done is None:
            return
        if isinstance(r, list) and r and isinstance(r[0], bytes):
            self.answer(self.history._decode(self.channel, r), "")
        else:
            self.answer(None, str(r) if isinstance(r, Exception) else "unexpected reply")

    def answer(self, replay: Replay | None, why: str) -> None:
        done, self.done = self.done, None
        if done is None:
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if replay is None:
            self.history._error(self.channel, why)
            replay = Replay("gone")
        try:
            done(replay)
        except Exception:
            log.exception("bus: a history read's callback failed")


def pack_pipeline(conn: Connection, commands: list[tuple[Any, ...] | bytes | int]) -> list[bytes]:
    """The Redis protocol of a pipeline: tuples packed by redis-py, write script calls packed
    already (bytes) as they are, and the messages that ride in an earlier script call (int)
    as nothing."""
    if all(type(c) is tuple for c in commands):
        return conn.pack_commands(cast(list[tuple[Any, ...]], commands))
    out: list[bytes] = []
    run: list[tuple[Any, ...]] = []
    for c in commands:
        if isinstance(c, tuple):
            run.append(c)
            continue
        if run:
            out += conn.pack_commands(run)
            run = []
        if isinstance(c, bytes):
            out.append(c)
    if run:
        out += conn.pack_commands(run)
    return out


def _bulk(b: bytes) -> bytes:
    """``b`` as a Redis protocol bulk string."""
    return b"$%d\r\n%s\r\n" % (len(b), b)


def _ignore(reply: object) -> None:
    pass


def _text(v: object) -> str | None:
    if isinstance(v, bytes):
        return v.decode("utf-8", "surrogatepass")
    return None


def _server_version(info: object) -> tuple[int, ...] | None:
    """``redis_version`` from an ``INFO server`` reply (None when it is not there)."""
    text = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
    for line in text.splitlines():
        if line.startswith("redis_version:"):
            try:
                return tuple(int(x) for x in line.split(":", 1)[1].strip().split(".")[:2])
            except ValueError:
                return None
    return None
