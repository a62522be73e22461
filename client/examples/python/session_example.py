#!/usr/bin/env python3
"""What a stateless app service does with ringkv: keep a user's session in it.

Run it through run.sh, which generates the gRPC stubs (ringkv.v1.kv_pb2 and
kv_pb2_grpc) from proto/ and puts them on PYTHONPATH. It uses grpc.aio (asyncio),
as an async web service would; the synchronous grpc API works the same way.

Environment:
  RINGKV_ADDR        host:port of the router, or of any node (a comma-separated
                     list of nodes works too); default 127.0.0.1:7000
  RINGKV_KEY_PREFIX  prefix of this run's keys; default a fresh random one

Prints one line per step and checks every answer; exits 1 if any differs from
what ringkv promises.
"""

import asyncio
import json
import os
import sys
import time
import uuid

import grpc

from ringkv.v1 import kv_pb2, kv_pb2_grpc

# One operation, all its retries included, gives up after this long.
RETRY_FOR_S = 10.0
# How long one attempt may take once it is sent.
ATTEMPT_TIMEOUT_S = 5.0
# How long to wait for a connection before trying the next address.
CONNECT_TIMEOUT_S = 1.0
FIRST_BACKOFF_S = 0.05
MAX_BACKOFF_S = 1.0

# A node sends the typed reason for a FAILED_PRECONDITION (NotLeader, WrongShard)
# as a serialized ringkv.v1.ErrorDetail in this binary trailer (tonic's
# Status::with_details). gRPC decodes "-bin" metadata to bytes for us.
DETAILS_TRAILER = "grpc-status-details-bin"


class ExampleFailed(Exception):
    """An answer differed from what the example expects."""


class RingKV:
    """A small ringkv client: follows NotLeader redirects and retries through
    elections and unreachable nodes.

    Pointed at the router, the router does the redirecting and this class rarely
    retries; pointed at a node, it finds each key's leader by itself.
    """

    def __init__(self, addrs):
        self._addrs = addrs
        self._channels = {}
        # key -> the address that last served it, so later operations on the key go
        # straight to its shard's leader. (A real client would cache per shard.)
        self._leader_of = {}
        # Where a key not seen yet goes first: the last address that answered.
        self._last_good = addrs[0]

    async def close(self):
        for channel, _ in self._channels.values():
            await channel.close()

    async def _connect(self, addr):
        """The stub for `addr`, once its channel is connected; raises
        asyncio.TimeoutError if it cannot connect within CONNECT_TIMEOUT_S."""
        if addr not in self._channels:
            options = [
                # Talk to ringkv directly, even when http_proxy is set for the internet.
                ("grpc.enable_http_proxy", 0),
                # A restarted node is worth trying again soon (gRPC's default: 2 min).
                ("grpc.max_reconnect_backoff_ms", 1000),
            ]
            channel = grpc.aio.insecure_channel(addr, options=options)
            self._channels[addr] = (channel, kv_pb2_grpc.KVStub(channel))
        channel, stub = self._channels[addr]
        if channel.get_state(try_to_connect=True) != grpc.ChannelConnectivity.READY:
            await asyncio.wait_for(channel.channel_ready(), CONNECT_TIMEOUT_S)
        return stub

    async def call(self, method, request, idempotent):
        """Sends KV.<method>(request) until it gets an answer.

        Retried: NotLeader (at the leader it names, or after a pause during an
        election), WrongShard (at the next address given), and connection
        failures: the node refused or never got the request, so nothing was
        written. UNAVAILABLE and DEADLINE_EXCEEDED after the request was sent are
        retried only for an `idempotent` request: a write may have been applied
        before the error, and an Increment or a conditional Put sent twice would
        count twice or report a false conflict.
        """
        deadline = time.monotonic() + RETRY_FOR_S
        addr = self._leader_of.get(request.key, self._last_good)
        backoff = FIRST_BACKOFF_S
        while True:
            try:
                stub = await self._connect(addr)
                response = await getattr(stub, method)(request, timeout=ATTEMPT_TIMEOUT_S)
                self._leader_of[request.key] = self._last_good = addr
                return response
            except asyncio.TimeoutError:
                problem = f"cannot connect to {addr}"
                addr = self._next_addr(addr)
            except grpc.RpcError as err:
                code, detail = err.code(), error_detail(err)
                problem = f"{code.name}: {err.details()}"
                if detail is not None and detail.HasField("not_leader"):
                    leader = detail.not_leader
                    if leader.leader_addr:
                        say(f"  redirected: {addr} does not lead shard {leader.shard}, "
                            f"node {leader.leader_id} at {leader.leader_addr} does")
                        addr = leader.leader_addr
                        if time.monotonic() < deadline:
                            continue  # no pause: the leader is known
                    # else: election under way; same address again after a pause
                elif detail is not None and detail.HasField("wrong_shard"):
                    if len(self._addrs) == 1:
                        raise ExampleFailed(
                            f"{addr} hosts no replica of shard {detail.wrong_shard.shard}: point "
                            "RINGKV_ADDR at the router, or list every node") from None
                    addr = self._next_addr(addr)
                elif code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    if not idempotent:
                        raise ExampleFailed(
                            f"{method} failed after it was sent ({problem}); it may or may not "
                            "have been applied, so it is not retried") from None
                    addr = self._next_addr(addr)
                else:
                    raise  # a real answer (INVALID_ARGUMENT, a non-integer counter, ...)
            if time.monotonic() + backoff > deadline:
                raise ExampleFailed(
                    f"{method} gave up after {RETRY_FOR_S:.0f} s; last error: {problem}")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _next_addr(self, addr):
        """The configured address after `addr` (a redirect target counts as the
        first), for when `addr` cannot serve the request."""
        if addr in self._addrs:
            return self._addrs[(self._addrs.index(addr) + 1) % len(self._addrs)]
        return self._addrs[0]

    # One method per RPC, so that the example below reads like application code.

    async def put(self, key, value, ttl_ms=0, if_version=None):
        request = kv_pb2.PutRequest(key=key, value=value, ttl_ms=ttl_ms)
        if if_version is not None:
            request.if_version = if_version
        return await self.call("Put", request, idempotent=if_version is None)

    async def get(self, key):
        return await self.call("Get", kv_pb2.GetRequest(key=key), idempotent=True)

    async def touch(self, key, ttl_ms):
        request = kv_pb2.TouchRequest(key=key, ttl_ms=ttl_ms)
        return await self.call("Touch", request, idempotent=True)

    async def increment(self, key, delta, ttl_ms=0):
        request = kv_pb2.IncrementRequest(key=key, delta=delta, ttl_ms=ttl_ms)
        return await self.call("Increment", request, idempotent=False)

    async def delete(self, key):
        # Sent twice, an unconditional delete still leaves the key deleted.
        return await self.call("Delete", kv_pb2.DeleteRequest(key=key), idempotent=True)


def error_detail(err):
    """The ringkv.v1.ErrorDetail a FAILED_PRECONDITION carries, or None."""
    if err.code() != grpc.StatusCode.FAILED_PRECONDITION:
        return None
    for key, value in err.trailing_metadata() or ():
        if key == DETAILS_TRAILER:
            detail = kv_pb2.ErrorDetail.FromString(value)
            return detail if detail.WhichOneof("kind") else None
    return None


def say(line):
    print(line, flush=True)


def check(condition, what):
    if not condition:
        raise ExampleFailed(what)


async def main():
    addr_list = os.environ.get("RINGKV_ADDR") or "127.0.0.1:7000"
    addrs = [addr.strip() for addr in addr_list.split(",") if addr.strip()]
    if not addrs:
        print(f"FAILED: no address in RINGKV_ADDR={addr_list!r}", file=sys.stderr)
        return 1
    prefix = os.environ.get("RINGKV_KEY_PREFIX") or f"example-{uuid.uuid4().hex[:12]}/"
    session_key = f"{prefix}session".encode()
    requests_key = f"{prefix}requests".encode()
    say(f"ringkv at {','.join(addrs)}, keys under {prefix}")
    kv = RingKV(addrs)
    try:
        # Log in: the session lives for 60 s unless the user comes back.
        session = {"user": 7, "cart": []}
        put = await kv.put(session_key, json.dumps(session).encode(), ttl_ms=60_000)
        check(put.succeeded and put.version > 0, f"put: {put}")
        say(f"put session with ttl 60000 ms: version {put.version}")

        # Any instance of the app service can read it back.
        got = await kv.get(session_key)
        check(got.found and json.loads(got.value) == session, f"get: {got}")
        check(got.version == put.version and 0 < got.ttl_ms <= 60_000, f"get: {got}")
        say(f"get session: {got.value.decode()}, version {got.version}, ttl {got.ttl_ms} ms")

        # Update it only if nobody else did since we read it (compare-and-set).
        # A Put replaces the TTL too (0 = never expires), so pass it again.
        session["cart"].append("book")
        cas = await kv.put(session_key, json.dumps(session).encode(), ttl_ms=60_000,
                           if_version=got.version)
        check(cas.succeeded and cas.version > got.version, f"cas: {cas}")
        say(f"cas update at version {got.version}: succeeded, now version {cas.version}")

        # Another instance still holding the old version loses, and learns the
        # current version: a failed condition is an answer, not an error.
        stale = await kv.put(session_key, b'{"user": 7, "cart": ["lost"]}', ttl_ms=60_000,
                             if_version=got.version)
        check(not stale.succeeded and stale.version == cas.version, f"stale cas: {stale}")
        say(f"stale cas at version {got.version}: succeeded=false, current version {stale.version}")

        # The user is active: extend the session without rewriting it.
        touched = await kv.touch(session_key, ttl_ms=120_000)
        check(touched.found and 60_000 < touched.ttl_ms <= 120_000, f"touch: {touched}")
        after = await kv.get(session_key)
        check(after.version == cas.version and after.ttl_ms > 60_000, f"get after touch: {after}")
        say(f"touch session: ttl now {touched.ttl_ms} ms, version still {after.version}")

        # Count the session's requests (a missing counter starts at 0).
        first = await kv.increment(requests_key, 1, ttl_ms=60_000)
        second = await kv.increment(requests_key, 1)
        check((first.value, second.value) == (1, 2), f"increment: {first} then {second}")
        say(f"increment request counter twice: {first.value}, then {second.value}")

        # Log out.
        deleted = await kv.delete(session_key)
        check(deleted.deleted, f"delete: {deleted}")
        gone = await kv.get(session_key)
        check(not gone.found, f"get after delete: {gone}")
        await kv.delete(requests_key)
        say(f"delete session: deleted at version {deleted.version}, get finds nothing")
    except ExampleFailed as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    except grpc.RpcError as err:
        print(f"FAILED: ringkv answered {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    finally:
        await kv.close()
    say("session example: all steps behaved as expected")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
