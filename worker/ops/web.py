"""The HTTP endpoint on ``METRICS.port``: ``/metrics``, ``/healthz`` and a status page ``/``.

Served by ``run`` and ``watch`` (and a Celery worker's main process, ``/metrics`` of its
children and ``/healthz``) from a daemon thread of the standard library's threading HTTP
server: a scrape never waits for the work, and the work never waits for a scrape.  Loopback
(``127.0.0.1``) unless ``METRICS.host`` says otherwise.

The page shows what ``synchro-sync status`` shows, as HTML that refreshes itself every few
seconds (``<meta http-equiv="refresh">``): no script at all.
"""

from __future__ import annotations

import contextlib
import html
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from worker import metrics
from worker.coord.pending import list_pending
from worker.coord.redis import is_redis_url
from worker.ops.health import Health
from worker.ops.report import StatusReport, ago, collect_status
from worker.stores.modules.names import STORE_FILES, STORE_FILES_LABEL

if TYPE_CHECKING:
    from worker.config import Settings

log = logging.getLogger("synchro_sync.web")

#: Seconds between the page's own refreshes.
PAGE_REFRESH = 5


class LiveCollector:
    """What a watching process knows at scrape time: events seen, coalesced (in the debounce
    window, or by the broker's pending-path hash), dropped, and the paths waiting."""

    def __init__(self, settings: Settings, watcher: Any, dispatcher: Any) -> None:
        self.settings = settings
        self.watcher = watcher
        self.dispatcher = dispatcher

    def pending(self) -> int:
        count = len(self.watcher.pending()) if self.watcher is not None else 0
        local = getattr(self.dispatcher, "pending", None)
        if callable(local):
            return count + len(local())
        if self.settings.BROKER_URL and is_redis_url(self.settings.BROKER_URL):
            # Broker away: /healthz says so; the gauge shows what is known.
            with contextlib.suppress(Exception):
                count += list_pending(self.settings.BROKER_URL, 0)[1]
        return count

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        coalesced, overflows = metrics.live_counts()
        stats = getattr(self.watcher, "stats", None)
        events = int(getattr(stats, "events", 0))
        merged = coalesced + int(getattr(self.dispatcher, "coalesced", 0))
        yield CounterMetricFamily(f"{metrics.PREFIX}_watcher_events", "Watcher events seen",
                                  value=events)
        yield CounterMetricFamily(f"{metrics.PREFIX}_watcher_events_coalesced",
                                  "Watcher events merged into a path already waiting",
                                  value=merged)
        yield CounterMetricFamily(f"{metrics.PREFIX}_watcher_events_dropped",
                                  "Watcher event queue overflows (events lost; a full pass "
                                  "follows)", value=overflows)
        yield GaugeMetricFamily(f"{metrics.PREFIX}_pending_paths",
                                "Paths waiting to be synced (debounce window, queue)",
                                value=self.pending())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    settings: Settings
    registry: Any
    health: Health
    role: str


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            from prometheus_client.exposition import choose_encoder

            # The text format, or OpenMetrics when the scraper asks for it.
            encode, ctype = choose_encoder(self.headers.get("Accept", ""))
            self._send(200, encode(self.server.registry), ctype)
        elif path == "/healthz":
            why = self.server.health.problem()
            self._send(503 if why else 200, f"{why or 'ok'}\n".encode(),
                       "text/plain; charset=utf-8")
        elif path == "/" and not self.server.role.startswith("worker"):
            body = page(self.server.settings, self.server.health.problem())
            self._send(200, body.encode(), "text/html; charset=utf-8")
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s %s", self.address_string(), format % args)


_live: LiveCollector | None = None


def serve(settings: Settings, *, role: str, watcher: Any = None, dispatcher: Any = None,
          registry: Any = None, stop: threading.Event | None = None) -> _Server | None:
    """Serve on ``METRICS.host:METRICS.port`` until ``stop`` is set (or the process ends);
    None when ``METRICS.port`` is unset.  A port that cannot be bound is one warning."""
    port = settings.METRICS.port
    if port is None:
        return None
    metrics.enable()
    if registry is None:
        from prometheus_client import REGISTRY

        registry = REGISTRY
        global _live
        if _live is not None:  # a second run in one process (tests): the newest one counts
            registry.unregister(_live)
            _live = None
        if watcher is not None or dispatcher is not None:
            _live = LiveCollector(settings, watcher, dispatcher)
            registry.register(_live)
    try:
        server = _Server((settings.METRICS.host, port), _Handler)
    except OSError as exc:
        log.warning("metrics not served: cannot listen on %s:%s (%s)", settings.METRICS.host,
                    port, exc.strerror or exc)
        return None
    server.settings = settings
    server.registry = registry
    server.role = role
    server.health = Health(settings, role, watcher,
                           registry if role.startswith("worker") else None)
    threading.Thread(target=server.serve_forever, name="synchro-sync-web", daemon=True).start()
    log.info("metrics, /healthz and the status page on http://%s:%s/", settings.METRICS.host,
             port)
    if stop is not None:
        def closer() -> None:
            stop.wait()
            server.shutdown()
            server.server_close()

        threading.Thread(target=closer, name="synchro-sync-web-stop", daemon=True).start()
    return server


# --- the page -------------------------------------------------------------------------------


def page(settings: Settings, problem: str | None = None) -> str:
    """What ``status`` shows, as a page that refreshes itself; ``problem``: /healthz's."""
    try:
        report = collect_status(settings, limit=20)
    except Exception as exc:  # the page says what it can
        return _html("synchro-sync", f"<p class=bad>status unavailable: "
                     f"{html.escape(exc.__class__.__name__)}</p>")
    health = (f"<p class=bad>health: {html.escape(problem)}</p>" if problem
              else "<p class=ok>health: ok</p>")
    return _html(f"synchro-sync: {report.mode}", health + _body(report))


def _body(report: StatusReport) -> str:
    e = html.escape
    out: list[str] = []
    if report.problems:
        out.append("<ul class=bad>" + "".join(f"<li>problem: {e(p.text)}</li>"
                                              for p in report.problems) + "</ul>")
    out.append("<h2>Queues</h2><table><tr><th>queue</th><th>waiting</th></tr>")
    for name, depth in report.queues.items():
        out.append(f"<tr><td>{e(name)}</td><td>{'unknown' if depth is None else depth}</td></tr>")
    out.append("</table>")
    out.append(f"<h2>Pending paths: {report.pending_count}</h2>")
    if report.pending:
        out.append("<ul>" + "".join(f"<li><code>{e(p)}</code></li>" for p in report.pending)
                   + "</ul>")
    out.append("<h2>Containers</h2>")
    if not report.full_passes:
        out.append("<p>no full pass yet</p>")
    else:
        cols = ("uploaded", "copied", "deleted", "unchanged", "failures")
        out.append("<table><tr><th>container</th><th>last full pass</th>"
                   + "".join(f"<th>{c}</th>" for c in cols) + "</tr>")
        for container, info in report.full_passes.items():
            bad = " class=bad" if info.get("failures") else ""
            shown = STORE_FILES_LABEL if container == STORE_FILES else container
            out.append(f"<tr{bad}><td>{e(shown)}</td><td>{e(ago(info.get('at')))}</td>"
                       + "".join(f"<td>{e(str(info.get(c, '')))}</td>" for c in cols)
                       + "</tr>")
        out.append("</table>")
    snap = report.snapshot
    out.append("<h2>Last snapshot</h2>")
    if snap:
        out.append(f"<p>{e(ago(snap.get('at')))} <code>{e(str(snap.get('id', '')))}</code>: "
                   f"{e(str(snap.get('sessions', '?')))} sessions, kept "
                   f"{e(str(snap.get('kept', '?')))} &rarr; {e(str(snap.get('dest', '')))}</p>")
    else:
        out.append("<p>never</p>")
    out.append(f"<h2>Recent failures: {len(report.failures)}</h2>")
    if report.failures:
        out.append("<table><tr><th>when</th><th>task</th><th>where</th><th>error</th></tr>")
        for f in report.failures:
            where = "/".join(x for x in (f.get("container"), f.get("path")) if x)
            out.append(f"<tr><td>{e(ago(f.get('at')))}</td><td>{e(str(f.get('task')))}</td>"
                       f"<td><code>{e(where)}</code></td><td>{e(str(f.get('error')))}</td></tr>")
        out.append("</table>")
    out.append(f"<p>retries: {report.retry_total}</p>")
    return "\n".join(out)


_STYLE = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 60em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.4em; }
table { border-collapse: collapse; } td, th { padding: .2em .8em; border-bottom: 1px solid #ddd;
text-align: left; vertical-align: top; } td:first-child { white-space: nowrap; }
.bad { color: #b00020; } .ok { color: #1b7f3b; } footer { color: #777; margin-top: 2em; }
"""


def _html(title: str, body: str) -> str:
    now = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="refresh" content="{PAGE_REFRESH}">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>\n{body}\n"
        f"<footer>as of {now}; this page refreshes every {PAGE_REFRESH} s; "
        "<a href=/metrics>metrics</a> &middot; <a href=/healthz>health</a></footer>"
        "</body></html>"
    )
