"""What :mod:`worker.stores.sessions.redis` needs besides the store: its Lua scripts, the
one table from redis-py's exceptions to :mod:`worker.errors`, and SCAN pattern escaping.

The read scripts make one command per batch of keys: a batch of 1,000 pipelined commands
costs the client 1,000 reply parses in Python, one ``EVALSHA`` with the keys costs one.  Values
are not passed through Lua when reading (a native ``MGET`` does that): copying 1 KB strings
into Lua doubled the server's CPU.  Commands are packed by :data:`pack` (hiredis, in C).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import cast

import hiredis
import redis.exceptions as rexc

from worker.errors import AccessDenied, StoreError, TransientStoreError

#: One command (its words as bytes) in the protocol's bytes.  hiredis's stub types the
#: argument as a tuple of one item.
pack = cast(Callable[[tuple[bytes, ...]], bytes], hiredis.pack_command)

EXPIRY_LUA = """
-- The absolute expiry in ms of each key (-1 none, -2 no key): PEXPIRETIME where the server
-- has it (7.0+), else TIME + PTTL.  Values are read by a native MGET next to it: passing
-- 1 KB strings through Lua doubled the server's CPU per session.
local out = {}
local exact = true
local now = nil
for i, key in ipairs(KEYS) do
  local at = -2
  if exact then
    at = redis.pcall('PEXPIRETIME', key)
    if type(at) == 'table' then exact = false end
  end
  if not exact then
    if not now then
      local t = redis.call('TIME')
      now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    end
    at = redis.call('PTTL', key)
    if at >= 0 then at = now + at end
  end
  out[i] = at
end
return out
"""

GET_LUA = """
local value = redis.call('GET', KEYS[1])
if not value then return {false, -2} end
local ok, at = pcall(redis.call, 'PEXPIRETIME', KEYS[1])
if not ok then
  local t = redis.call('TIME')
  at = redis.call('PTTL', KEYS[1])
  if at >= 0 then at = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + at end
end
return {value, at}
"""


def scripting_refused(exc: Exception) -> bool:
    text = str(exc).lower()
    return "unknown command" in text or "noperm" in text or "scripting" in text


def glob_escape(text: bytes) -> bytes:
    out = bytearray()
    for byte in text:
        if byte in b"*?[]\\":
            out += b"\\"
        out.append(byte)
    return bytes(out)


@contextmanager
def mapped_errors(store: str, what: str) -> Iterator[None]:
    """redis-py's exceptions -> worker.errors; the only place they are caught."""
    try:
        yield
    except (rexc.AuthenticationError, rexc.AuthorizationError, rexc.NoPermissionError) as exc:
        raise AccessDenied(f"{what}: {exc}", store=store) from exc
    except rexc.ConnectionError as exc:
        if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "WRONG_VERSION_NUMBER" in str(exc):
            # A TLS trust problem does not go away by waiting: fail at once.
            raise AccessDenied(f"{what}: TLS: {exc}", store=store) from exc
        raise TransientStoreError(f"{what}: {exc}", store=store) from exc
    except (rexc.TimeoutError, rexc.TryAgainError) as exc:
        # Includes BusyLoadingError: a restarted server still loading its data.
        raise TransientStoreError(f"{what}: {exc}", store=store) from exc
    except rexc.ResponseError as exc:
        text = str(exc)
        if text.startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
            raise AccessDenied(f"{what}: {exc}", store=store) from exc
        if text.startswith(("LOADING", "MASTERDOWN", "TRYAGAIN", "READONLY")):
            raise TransientStoreError(f"{what}: {exc}", store=store) from exc
        raise StoreError(f"{what}: {exc}", store=store) from exc
    except rexc.RedisError as exc:
        raise StoreError(f"{what}: {exc}", store=store) from exc
