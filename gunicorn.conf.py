"""gunicorn settings for Sluice: one gevent worker holds thousands of long streams.

gunicorn reads ``./gunicorn.conf.py`` by default, so from the checkout plain
``gunicorn wsgi:app`` starts Sluice as ``make run``, systemd and the tests do
(``-c gunicorn.conf.py`` says the same thing explicitly). Every value can be
overridden on the command line or with ``GUNICORN_CMD_ARGS``. What matters for
streams, if you start gunicorn without this file (docs/deploy.md, "gunicorn
without gunicorn.conf.py"): the gevent worker, ``worker_connections`` and
``keepalive``.
"""

import math
import os
import resource
import sys

from gunicorn.glogging import Logger

bind = os.environ.get("SLUICE_BIND", "127.0.0.1:8000")
# gevent records, for each greenlet, who spawned it and ten frames of the
# spawner's stack (for its debugging helpers, which Sluice does not use): a stack
# walk and about 1 KB per greenlet, and a stream has two. Set it to true to debug.
os.environ.setdefault("GEVENT_TRACK_GREENLET_TREE", "false")
# gunicorn's default sync worker serves one request at a time: one stream would
# hold the whole worker. Under gevent a stream is a greenlet.
worker_class = "gevent"
# One worker per core is the usual shape; the in-process broker serves one worker
# (see docs/deploy.md, "Redis: several workers and hosts", before raising this).
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
# Each open stream is a connection: gunicorn's default of 1000 queues the rest.
worker_connections = 10000
# With gevent, `timeout` is the worker's heartbeat, not a request limit: streams
# lasting many minutes are fine.
timeout = 30
# A stop or a reload lets running generations go on for the drain window,
# SLUICE_DRAIN_S (120 s by default, as in sluice/config.py; docs/deploy.md
# "Reloads, restarts and crashes"); gunicorn waits a little longer before it
# gives up on a worker, so the window closes cleanly first.
graceful_timeout = math.ceil(float(os.environ.get("SLUICE_DRAIN_S") or 120)) + 5
# Longer than nginx's upstream keepalive_timeout, so gunicorn never closes first.
# The gevent worker also bounds the wait for each request's headers by it, a new
# connection's first request included: with gunicorn's default of 2 s, a burst
# that keeps the worker busy for 2 s drops the connections still waiting.
keepalive = 75
# gunicorn 27's control socket sits at one fixed path per user: several Sluice
# instances on a host (or the tests) would fight over it, and Sluice needs none.
control_socket_disable = True
# Sluice writes one JSON access line per request itself (sluice/logs.py, with the
# request id, model and outcome); gunicorn's own line would say less, twice over,
# and cost ~5% of a short request's CPU.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("SLUICE_LOG_LEVEL", "info")


class SluiceLogger(Logger):
    """gunicorn's logger, except that a client dropped at the send timeout is one WARNING line.

    A client that stops reading is dropped once a write has made no progress
    for ``SLUICE_SEND_TIMEOUT_S`` (``sluice/disconnect.py``, ``limit_send``): a
    normal event, which Sluice's access line records (outcome ``cancelled``).
    The write's ``TimeoutError`` reaches gunicorn's gevent worker, which logs
    any socket error but a reset or a broken pipe at ERROR with its traceback
    (about 45 lines). A socket timeout there can only be that write.
    """

    def exception(self, msg, *args, **kwargs):
        if isinstance(sys.exc_info()[1], TimeoutError):
            self.warning("Dropped a client that stopped reading: no write progress for SLUICE_SEND_TIMEOUT_S.")
            return
        super().exception(msg, *args, **kwargs)


logger_class = SluiceLogger


def on_starting(server):
    """Refuse a setup that would lose generations; raise the open-file limit.

    Without ``SLUICE_REDIS_URL`` each worker keeps its generations in memory, so
    a resume or a cancel that lands on another worker would find nothing.
    """
    if server.cfg.workers > 1 and not os.environ.get("SLUICE_REDIS_URL"):
        raise SystemExit(
            f"Sluice: {server.cfg.workers} workers need SLUICE_REDIS_URL (generations are "
            "per-worker without it); set it, or run one worker."
        )
    if server.cfg.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Every worker writes its metrics here and /metrics sums them.
        import tempfile

        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="sluice-metrics-")
    # A stream is a socket, or two with an upstream.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1_048_576 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    # The local model server (providers/llama_server.py), loaded before any worker
    # answers: one per host, kept while this master (or a worker) lives. Only for
    # Sluice's entry points (wsgi:app, app:create_app()), not a baseline's app.
    if str(getattr(server.app, "app_uri", "")).startswith(("wsgi:", "app:")):
        from providers.llama_server import start_local_model
        from sluice.config import load_config

        server.sluice_local_model = start_local_model(load_config())


def pre_request(worker, req):
    """Refuse a body declared over ``SLUICE_MAX_BODY_BYTES`` without inviting it.

    gunicorn answers ``Expect: 100-continue`` with ``100 Continue`` before the
    application runs; Sluice refuses such a body with ``413`` without reading
    it (``sluice/bodies.py``), so the client is not told to send it, and the
    connection closes after the 413 instead of reading the unwanted body to
    reach the next request.
    """
    limit = getattr(worker.wsgi, "config", {}).get("SLUICE_MAX_BODY_BYTES")
    length = next((value for name, value in req.headers if name == "CONTENT-LENGTH"), "")
    if limit is not None and length.isdigit() and int(length) > limit:
        req._expected_100_continue = False  # gunicorn's own flag (gunicorn/http/message.py)
        req.must_close = True


def post_worker_init(worker):
    """Reap for the worker's life; drain on SIGTERM or reload.

    On a stop or a reload gunicorn stops this worker accepting at once (new
    workers, or other hosts, take the new requests) and gives up on it after
    ``graceful_timeout``. Sluice lets its running generations go on for the
    drain window (``SLUICE_DRAIN_S``, ending a little before that), then ends
    those still running with an ``error`` event ``server_shutting_down`` so
    their clients retry (and, with Redis, resume elsewhere) instead of seeing
    a cut connection.
    """
    import gc

    import gevent

    # What start-up allocated (modules, the app) is never garbage: keep the
    # collector from walking it again, and let it run less often, so a full
    # collection does not pause thousands of streams at once (see
    # docs/performance.md). SLUICE_GC_THRESHOLD=off leaves Python's defaults.
    threshold = os.environ.get("SLUICE_GC_THRESHOLD", "50000,20,100")
    if threshold != "off":
        gc.collect()
        gc.freeze()
        gc.set_threshold(*(int(part) for part in threshold.split(",")))

    # gevent's server accepts up to 100 connections per wake-up and runs each new
    # request until it blocks before anything else: a burst of new streams then
    # delays every open stream's next event by the whole batch. 10 halved the
    # p99 lateness of 500 open streams during a 1,000/s burst, and their time to
    # first event, and kept W3's added latency at ~3 ms where 100 gave ~18; only
    # past saturation (5,000 streams starting at 1,000/s) did 100 start them
    # sooner (docs/performance.md). With several workers gunicorn sets 1.
    from gevent.baseserver import BaseServer

    BaseServer.max_accept = int(os.environ.get("SLUICE_MAX_ACCEPT", "10"))

    # This file is read by any gunicorn started in the checkout: another app
    # (a benchmark's baseline) gets the tuning above and nothing of Sluice's.
    extensions = getattr(worker.wsgi, "extensions", {})
    if "sluice" not in extensions:
        return

    # Event-loop lag and events per second on /metrics, as the benchmark sees them.
    extensions["sluice.metrics"].watch_loop()

    generations = extensions["sluice"]
    # Every worker ends the generations of workers that died, even while it runs none.
    generations.run_janitor()
    grace = worker.cfg.graceful_timeout
    window = min(worker.wsgi.config["SLUICE_DRAIN_S"], max(0.5 * grace, grace - 1.5))

    def watch():
        while worker.alive:
            gevent.sleep(0.2)
        generations.drain(window)

    gevent.spawn(watch)


def worker_int(worker):
    """SIGINT or SIGQUIT, a quick stop: running generations end now (``server_shutting_down``)."""
    generations = _generations(worker)
    if generations is not None:
        generations.drain(0)


def worker_exit(server, worker):
    """Keep a draining worker alive until its generations have ended or its window closed.

    gunicorn's gevent worker returns once its connections are closed, and a
    background generation is not a connection: without this wait the process
    would exit and take the generation with it. Until then the arbiter is
    waiting for the old workers (a reload) or for all of them (a stop), within
    ``graceful_timeout``.
    """
    generations = _generations(worker)
    if generations is not None and generations.draining:
        generations.drained.wait(server.cfg.graceful_timeout)


def _generations(worker):
    """The worker's ``sluice.generations.Generations`` (None for another app, or before it loaded)."""
    return getattr(getattr(worker, "wsgi", None), "extensions", {}).get("sluice")


def child_exit(server, worker):
    """Forget a dead worker's live gauges (its counters stay in the sums)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
