"""A Redis that refuses connections, in-process (fast; the real outages with two
gunicorn workers and a killed or stopped redis-server are in ``test_outages.py``).

The broker turns redis-py's outage errors into ``BrokerUnavailable``, says so
once, fails at once while Redis is known to be down, and the app answers what
it can: ``503 broker_unavailable`` for what needs the shared store, an answer
for ``stream: false`` and ``/v1``.
"""

from __future__ import annotations

import logging
import socket
import time

import pytest

from app import create_app
from sluice.broker.redis_broker import RedisBroker
from sluice.config import load_config
from sluice.errors import BrokerUnavailable
from tests.conftest import BASE_SETTINGS, LogRecords, upstream_settings

CHAT = {"model": "demo/echo", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def refused_url():
    """A redis:// URL whose port refuses connections (bound, never listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"redis://127.0.0.1:{sock.getsockname()[1]}/0"


@pytest.fixture
def sluice_log():
    """What Sluice logs (its logger does not propagate once an app set it up, so not caplog)."""
    handler = LogRecords()
    logger = logging.getLogger("sluice")
    logger.addHandler(handler)
    yield handler.records
    logger.removeHandler(handler)


def outage_warnings(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if "redis unreachable" in r.getMessage()]


def traces(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.levelno >= logging.ERROR or r.exc_info]


def test_the_broker_reports_an_outage_once_and_then_fails_at_once(refused_url, sluice_log):
    broker = RedisBroker(refused_url, socket_timeout_s=1.0)
    with pytest.raises(BrokerUnavailable):
        broker.create("gen_a", "demo/echo")
    started = time.monotonic()
    for call in (
        lambda: broker.create("gen_b", "demo/echo"),
        lambda: broker.state("gen_a"),
        lambda: broker.attach("gen_a"),
        lambda: broker.listen("gen_a", -1, 1.0),
    ):
        with pytest.raises(BrokerUnavailable):
            call()
    assert time.monotonic() - started < 0.1  # known down: no connection tried
    broker.renew(["gen_a"])  # best effort: no exception
    broker.detach("gen_a")
    assert broker.ping() is False
    assert len(outage_warnings(sluice_log)) == 1
    assert not traces(sluice_log)


def test_the_app_refuses_what_needs_redis_and_answers_the_rest(refused_url, fake_ollama, fake_openai, sluice_log):
    settings = {**BASE_SETTINGS, **upstream_settings(fake_ollama, fake_openai), "SLUICE_REDIS_URL": refused_url}
    application = create_app(load_config(settings))
    client = application.test_client()
    for path, body in (("/api/generations", CHAT), ("/api/chat", CHAT)):
        r = client.post(path, json=body)
        assert r.status_code == 503, r.get_data(as_text=True)
        assert r.json["error"]["code"] == "broker_unavailable" and int(r.headers["Retry-After"]) > 0
    r = client.get("/api/generations/gen_unknown")
    assert r.status_code == 503 and r.json["error"]["code"] == "broker_unavailable"
    r = client.post("/api/chat", json={**CHAT, "stream": False})
    assert r.status_code == 200 and r.json["finish_reason"] == "stop"
    r = client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200 and r.json["choices"][0]["finish_reason"] == "stop"
    r = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert r.status_code == 200 and r.get_data(as_text=True).rstrip().endswith("data: [DONE]")
    assert client.get("/readyz").status_code == 503
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "sluice_active_streams 0.0" in metrics
    assert 'sluice_http_errors_total{code="broker_unavailable"} 3.0' in metrics
    assert len(outage_warnings(sluice_log)) == 1
    assert not traces(sluice_log)
    assert not application.extensions["sluice"].running
