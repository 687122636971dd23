"""``GET /diagnostics/``: why a worker is not consuming, as JSON, from the worker's own web server.

When a consumer group's lag stops falling, the broker can only say *that* the worker's committed offsets stand
still. This page says *why*, from inside the worker, in one request:

- ``partitions``: for each assigned source partition, the three views a record passes through:
  the Kafka client's fetch position and whether it pauses the partition (``position``, ``client_paused``,
  ``prefetched``: records fetched and not yet handed to Faust); Faust's flow control (``fetching``: among the
  partitions Faust asks records for; ``paused``: paused by a rebalance or recovery; ``buffered``: taken out
  because its stream's buffer was full); and Faust's bookkeeping (``read``: last offset handed to a stream,
  ``committed``, ``acked_pending``: acknowledged but not yet committable, ``gaps``: offset ranges Faust will
  skip).
- ``streams``: each source topic's buffer (records waiting for their agent).
- ``producer``: table (changelog) writes queued in Faust's producer buffer and in flight.
- ``app``: whether the worker is in recovery or rebalancing and whether flow control lets records through.
- ``tasks``: every asyncio task of the worker's loop and of the Kafka consumer's thread loop, with the chain of
  ``await`` points it is suspended at (an agent stuck on a send shows the send).

The page shows the worker's insides (task stacks, offsets), so it asks for the data directory's password
(``<data_dir>/local-password``, made at start when missing; the embedded ClickHouse's too) with HTTP Basic auth,
any user name: ``curl -u "default:$(cat .closedloop/local-password)" http://127.0.0.1:6066/diagnostics/``.
Without it the page answers 401 and says where the password is.

Everything is read without locks from structures the worker keeps changing: a snapshot may be a few
microseconds inconsistent, which does not matter for the question it answers. The state comes from private
attributes of Faust and aiokafka, read in ``compat.faust_internals``; on a version without one the page answers
503 naming what is missing, and the worker goes on.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import gc
import hmac
from pathlib import Path
from typing import Any

from compat import faust_internals
from schemas.settings import ensure_local_password

__all__ = ["summarize", "install_web", "snapshot", "task_stacks"]

MAX_TASKS = 400
MAX_AWAIT_DEPTH = 16
_REPOSITORY = f"{Path(__file__).resolve().parents[2]}/"  # the repository root: paths show as stream_jobs/...


def _short_path(filename: str) -> str:
    for marker in ("/site-packages/", "/lib/python3"):
        if marker in filename:
            tail = filename.rsplit(marker, 1)[-1]
            return tail.split("/", 1)[-1] if marker == "/lib/python3" else tail
    return filename.removeprefix(_REPOSITORY)


def _inner_awaitable(awaitable: Any) -> Any:
    """The coroutine or async generator inside an awaitable that does not expose it as an attribute (an async
    generator's ``asend``, a wrapper object), found among the objects it refers to."""
    for referent in gc.get_referents(awaitable):
        if any(hasattr(referent, name) for name in ("cr_frame", "ag_frame", "gi_frame")):
            return referent
    return None


def _await_chain(coro: Any) -> list[str]:
    """Where a suspended coroutine waits: ``file:line function`` for each coroutine (and async generator) in its
    ``await`` chain, outermost first."""
    chain: list[str] = []
    while coro is not None and len(chain) < MAX_AWAIT_DEPTH:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) or getattr(coro, "ag_frame", None)
        if frame is None:
            inner = _inner_awaitable(coro) if not isinstance(coro, asyncio.Future) else None
            if inner is None:
                break  # a future: the end of the chain
            coro = inner
            continue
        chain.append(f"{_short_path(frame.f_code.co_filename)}:{frame.f_lineno} {frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None) or getattr(coro, "ag_await", None)
    return chain


def task_stacks(loop: asyncio.AbstractEventLoop) -> list[dict[str, Any]]:
    """Each pending task of ``loop`` with its await chain (safe to call from another thread: retried if the task
    set changes while it is read)."""
    for _attempt in range(5):
        try:
            tasks = list(asyncio.all_tasks(loop))
            break
        except RuntimeError:  # the set changed size while it was copied from another thread
            continue
    else:
        return []
    result = []
    for task in tasks[:MAX_TASKS]:
        if task.done():
            continue
        coro = task.get_coro()
        result.append(
            {
                "task": task.get_name(),
                "coroutine": getattr(coro, "__qualname__", type(coro).__name__),
                "awaiting": _await_chain(coro),
            }
        )
    result.sort(key=lambda t: (t["coroutine"], t["task"]))
    return result


def snapshot(app: Any) -> dict[str, Any]:
    """The consumer, stream and producer state of a running worker (see the module docstring)."""
    state = faust_internals.worker_state(app)
    thread_loop = faust_internals.consumer_thread_loop(app)
    return {
        **state,
        "tasks": {
            "worker": task_stacks(asyncio.get_running_loop()),
            "consumer_thread": task_stacks(thread_loop) if thread_loop is not None else [],
        },
    }


def authorized(header: str | None, password: str) -> bool:
    """True when ``header`` (``Authorization``) is HTTP Basic auth with ``password``, whatever the user name."""
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")[2]
    except (binascii.Error, UnicodeDecodeError):
        return False
    return hmac.compare_digest(given.encode("utf-8"), password.encode("utf-8"))


def install_web(app: Any, password_file: Path) -> None:
    """``GET /diagnostics/`` on the worker's web server, for whoever has the password in ``password_file``."""
    password = ensure_local_password(password_file)
    password_file = password_file.resolve()  # named in the 401, wherever the reader's shell is

    @app.page("/diagnostics/")
    async def diagnostics_view(web: Any, request: Any) -> Any:
        if not authorized(request.headers.get("Authorization"), password):
            return web.json(
                {
                    "error": "unauthorized",
                    "message": f"the diagnostics show the worker's insides: send the password in "
                    f'{password_file} with HTTP Basic auth (curl -u "default:$(cat '
                    f'{password_file})" ...)',
                },
                status=401,
                headers={"WWW-Authenticate": 'Basic realm="closedloop worker"'},
            )
        try:
            return web.json(snapshot(app))
        except (AttributeError, KeyError, TypeError) as error:  # another Faust or aiokafka than the page knows
            return web.json(
                {
                    "error": "diagnostics_unavailable",
                    "message": f"this worker's Faust/aiokafka lack what the page reads: {error!r}",
                },
                status=503,
            )


def summarize(diagnostics: dict[str, Any]) -> str:
    """A few lines for a person: the app flags, every partition that is behind or held back, what the agents and
    the fetch loop await. ``diagnostics`` is a :func:`snapshot` (the page's JSON)."""
    lines = [f"app: {diagnostics['app']}; producer buffer: {diagnostics['producer']}"]
    for name, p in diagnostics["partitions"].items():
        behind = (p.get("highwater") or 0) - (p["committed"] or 0)
        held = not p["fetching"] or p["paused"] or p["buffered"] or p.get("client_paused")
        if behind > 0 or held or p["acked_pending"] or p["gaps"]:
            lines.append(f"{name}: {behind} behind; " + ", ".join(f"{key}={value}" for key, value in p.items()))
    queued = {name: s["queued"] for name, s in diagnostics["streams"].items() if s["queued"]}
    lines.append(f"stream buffers holding records: {queued or 'none'}")
    for loop, tasks in diagnostics["tasks"].items():
        for task in tasks:
            chain = task["awaiting"]
            if any("stream_jobs/" in step or "fetcher.py" in step or "_commit" in step for step in chain):
                lines.append(f"{loop} {task['task']}: " + " > ".join(chain))
    return "\n".join(lines)
