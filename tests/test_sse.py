"""Byte-exact framing tables for ``sluice.sse``, ``sluice.events.dumps`` and ``sluice.formats``.

No server: every case pins the exact bytes, then reads them back with parsers
that are not Sluice's own (a WHATWG reference parser written here, and
httpx-sse's decoders) to prove that no text can end an event early or forge
another.
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass

import pytest
from httpx_sse._decoders import SSEDecoder, SSELineDecoder

from sluice import events, sse
from sluice.errors import UpstreamTimeout
from sluice.events import Event
from sluice.provider import Finish
from sluice.render import events as json_events
from sluice.render import text as text_formats

# -- parsers that are not Sluice's ------------------------------------------------------


@dataclass(frozen=True)
class Parsed:
    """One dispatched event, as a browser's ``MessageEvent`` sees it."""

    type: str
    data: str
    last_event_id: str


@dataclass
class Stream:
    """Everything a parser got from a byte stream."""

    events: list[Parsed]
    retry: int | None = None
    comments: int = 0


def whatwg_parse(raw: bytes) -> Stream:
    """The HTML standard's event-stream interpretation, step by step.

    https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation:
    UTF-8 decode (one leading BOM dropped), lines end at CRLF, CR or LF (nothing
    else), data lines are joined with LF, an event with an empty data buffer is
    not dispatched, and an unterminated last event is discarded.
    """
    text = raw.decode("utf-8")
    text = text.removeprefix("\ufeff")
    *lines, _unterminated = re.split(r"\r\n|\r|\n", text)
    out = Stream(events=[])
    data, event_type, last_id = "", "", ""
    for line in lines:
        if line == "":
            if data == "":
                event_type = ""
                continue
            out.events.append(Parsed(event_type or "message", data.removesuffix("\n"), last_id))
            data, event_type = "", ""
            continue
        if line.startswith(":"):
            out.comments += 1
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            event_type = value
        elif name == "data":
            data += value + "\n"
        elif name == "id":
            if "\0" not in value:
                last_id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                out.retry = int(value)
    return out


def httpx_sse_parse(raw: bytes) -> Stream:
    """httpx-sse's own line splitter and decoder, fed one byte at a time (as a trickling socket would).

    httpx-sse dispatches a block without a data line (a lone ``retry:``, or a
    ``: ping`` once an id was seen) as an event with empty data; a browser does
    not, so such blocks are not listed.
    """
    lines_in = SSELineDecoder()
    decoder = SSEDecoder()
    out = Stream(events=[])
    # An incremental decoder, so a UTF-8 character split across reads survives.
    utf8 = codecs.getincrementaldecoder("utf-8")()
    lines: list[str] = []
    for i in range(len(raw)):
        piece = utf8.decode(raw[i : i + 1])
        if piece:
            lines.extend(lines_in.decode(piece))
    lines.extend(lines_in.flush())
    had_data = False
    for line in lines:
        if line.startswith(":"):
            out.comments += 1
        elif line.partition(":")[0] == "data":
            had_data = True
        sent = decoder.decode(line)
        if sent is None:
            continue
        if sent.retry is not None:
            out.retry = sent.retry
        if had_data:
            out.events.append(Parsed(sent.event, sent.data, sent.id))
        had_data = False
    return out


PARSERS = [pytest.param(whatwg_parse, id="whatwg"), pytest.param(httpx_sse_parse, id="httpx-sse")]


def lf(text: str) -> str:
    """What a browser reconstructs: CRLF and lone CR arrive as LF."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


# -- sse.encode ----------------------------------------------------------------

ENCODE_CASES = [
    pytest.param("hello", None, None, b"data: hello\n\n", id="plain"),
    pytest.param("a\nb", None, None, b"data: a\ndata: b\n\n", id="lf"),
    pytest.param("a\r\nb", None, None, b"data: a\ndata: b\n\n", id="crlf"),
    pytest.param("a\rb", None, None, b"data: a\ndata: b\n\n", id="lone-cr"),
    pytest.param("\r", None, None, b"data: \ndata: \n\n", id="only-cr"),
    pytest.param("\r\n\r\n", None, None, b"data: \ndata: \ndata: \n\n", id="only-crlf-crlf"),
    pytest.param("a\n\rb", None, None, b"data: a\ndata: \ndata: b\n\n", id="lf-then-cr-is-two-breaks"),
    pytest.param("line\n", None, None, b"data: line\ndata: \n\n", id="trailing-lf"),
    pytest.param("line\r\n", None, None, b"data: line\ndata: \n\n", id="trailing-crlf"),
    pytest.param("\nline", None, None, b"data: \ndata: line\n\n", id="leading-lf"),
    pytest.param("", None, None, b"data: \n\n", id="empty"),
    pytest.param(" padded ", None, None, b"data:  padded \n\n", id="leading-space-kept"),
    pytest.param(":not a comment", None, None, b"data: :not a comment\n\n", id="colon-first"),
    pytest.param("data: forged", None, None, b"data: data: forged\n\n", id="data-forged"),
    pytest.param(
        "\n\nid: 99\ndata: forged",
        None,
        None,
        b"data: \ndata: \ndata: id: 99\ndata: data: forged\n\n",
        id="blank-lines-then-forged-event",
    ),
    pytest.param(
        "x\r\n\r\nevent: done\r\ndata: \r\n\r\n",
        None,
        None,
        b"data: x\ndata: \ndata: event: done\ndata: data: \ndata: \ndata: \n\n",
        id="crlf-forged-done",
    ),
    pytest.param("🙂", None, None, "data: 🙂\n\n".encode(), id="emoji"),
    pytest.param("日本語", None, None, "data: 日本語\n\n".encode(), id="cjk"),
    pytest.param("👩‍👩‍👧 ü\u0301", None, None, "data: 👩‍👩‍👧 ü\u0301\n\n".encode(), id="zwj-and-combining"),
    pytest.param(
        "a\u2028b\u2029c\x85d",
        None,
        None,
        "data: a\u2028b\u2029c\x85d\n\n".encode(),
        id="unicode-separators-are-not-line-breaks",
    ),
    pytest.param("nul\x00byte", None, None, b"data: nul\x00byte\n\n", id="nul"),
    pytest.param("x", 0, None, b"id: 0\ndata: x\n\n", id="id-zero"),
    pytest.param("x", 41, "delta", b"id: 41\nevent: delta\ndata: x\n\n", id="id-and-event"),
    pytest.param("x", "1\r\n2\r3\n4", None, b"id: 1234\ndata: x\n\n", id="id-with-cr-lf"),
    pytest.param("x", "7\n\ndata: forged", None, b"id: 7data: forged\ndata: x\n\n", id="id-forging-an-event"),
    pytest.param("x", None, "do\r\nne\r", b"event: done\ndata: x\n\n", id="event-with-cr-lf"),
    pytest.param("x", None, "a\n\ndata: forged", b"event: adata: forged\ndata: x\n\n", id="event-forging-an-event"),
    pytest.param("a\nb", "9", "done", b"id: 9\nevent: done\ndata: a\ndata: b\n\n", id="all-fields-multiline"),
]


@pytest.mark.parametrize(("data", "id_", "event", "expected"), ENCODE_CASES)
def test_encode_is_byte_exact(data, id_, event, expected):
    assert sse.encode(data, id=id_, event=event) == expected


@pytest.mark.parametrize("parse", PARSERS)
@pytest.mark.parametrize(("data", "id_", "event", "expected"), ENCODE_CASES)
def test_encode_reads_back_as_exactly_one_event(parse, data, id_, event, expected):
    parsed = parse(sse.encode(data, id=id_, event=event))
    assert len(parsed.events) == 1, parsed  # nothing forged, nothing lost
    (only,) = parsed.events
    assert only.data == lf(data)
    expected_id = "" if id_ is None else re.sub(r"[\r\n]", "", str(id_))
    assert only.last_event_id == expected_id
    expected_type = re.sub(r"[\r\n]", "", event) if event else "message"
    assert only.type == expected_type


def _encode_by_the_book(data, id_=None, event=None) -> bytes:
    """The framing rules spelled out, with no fast path: every field cleaned, data always split."""
    out = ""
    if id_ is not None:
        out += "id: " + str(id_).replace("\r", "").replace("\n", "") + "\n"
    if event is not None:
        out += "event: " + event.replace("\r", "").replace("\n", "") + "\n"
    if data is not None:
        out += "".join(f"data: {line}\n" for line in re.split(r"\r\n|\r|\n", data))
    return (out + "\n").encode("utf-8")


def test_encode_fast_paths_give_the_same_bytes_as_the_rules():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    text = st.lists(st.sampled_from(["a", "é", " ", "\n", "\r", "\r\n", "🙂", "\u2028", ":"])).map("".join)

    @settings(max_examples=300, deadline=None)
    @given(text | st.none(), st.integers(min_value=0) | text | st.none(), text | st.none())
    def check(data, id_, event):
        assert sse.encode(data, id=id_, event=event) == _encode_by_the_book(data, id_, event)

    check()


def test_encode_without_data_writes_no_data_line():
    raw = sse.encode(None, id=5)
    assert raw == b"id: 5\n\n"
    assert whatwg_parse(raw).events == []  # sets the last id, dispatches nothing


def test_encode_of_a_huge_multiline_payload_stays_one_event():
    data = ("x" * 1000 + "\r\n") * 50 + "🙂"
    raw = sse.encode(data, id=3)
    assert raw.count(b"\n\n") == 1 and raw.endswith(b"\n\n")
    for parse in (whatwg_parse, httpx_sse_parse):
        (only,) = parse(raw).events
        assert only.data == lf(data)


# -- sse.retry and the constants -------------------------------------------------


@pytest.mark.parametrize(
    ("ms", "expected"),
    [(3000, b"retry: 3000\n\n"), (0, b"retry: 0\n\n"), (250, b"retry: 250\n\n")],
)
def test_retry_is_byte_exact(ms, expected):
    assert sse.retry(ms) == expected


@pytest.mark.parametrize("parse", PARSERS)
def test_retry_dispatches_no_event(parse):
    parsed = parse(sse.retry(3000))
    assert parsed.retry == 3000 and parsed.events == []


def test_ping_is_a_comment_and_headers_match_the_contract():
    assert sse.PING == b": ping\n\n"
    parsed = whatwg_parse(sse.PING)
    assert parsed.events == [] and parsed.comments == 1
    assert sse.MIMETYPE == "text/event-stream"
    assert sse.HEADERS == {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    hop_by_hop = {"connection", "keep-alive", "transfer-encoding"}
    assert not hop_by_hop & {name.lower() for name in sse.HEADERS}


# -- json_events.json_stream -----------------------------------------------------------------


def _sample_events() -> list[Event | None]:
    """A generation with nasty text and idle gaps, numbered as the runner would."""
    return [
        Event.make(0, events.start("gen_abc", "demo/echo")),
        None,
        Event.make(1, events.delta("a\nb")),
        Event.make(2, events.delta("\r\n\n\nid: 99\ndata: forged\n\n")),
        None,
        None,
        Event.make(3, events.delta("🙂日本語\u2028\u2029")),
        Event.make(4, events.done(Finish("stop", {"prompt_tokens": 3, "completion_tokens": 4}))),
    ]


def sample_events():
    """The same events as the broker hands them over: one per batch, None for an idle gap."""
    return [None if e is None else [e] for e in _sample_events()]


JSON_STREAM_BYTES = [
    b"retry: 3000\n\n",
    b'id: 0\ndata: {"type":"start","id":"gen_abc","model":"demo/echo"}\n\n',
    b": ping\n\n",
    b'id: 1\ndata: {"type":"delta","content":"a\\nb"}\n\n',
    b'id: 2\ndata: {"type":"delta","content":"\\r\\n\\n\\nid: 99\\ndata: forged\\n\\n"}\n\n',
    b": ping\n\n",
    b": ping\n\n",
    'id: 3\ndata: {"type":"delta","content":"🙂日本語\\u2028\\u2029"}\n\n'.encode(),
    b'id: 4\ndata: {"type":"done","finish_reason":"stop","usage":{"prompt_tokens":3,"completion_tokens":4}}\n\n',
]


def test_json_stream_is_byte_exact():
    assert list(json_events.json_stream(sample_events(), 3000)) == JSON_STREAM_BYTES


def test_json_stream_retry_comes_first_even_with_no_events():
    assert list(json_events.json_stream([], 1500)) == [b"retry: 1500\n\n"]


@pytest.mark.parametrize("parse", PARSERS)
def test_json_stream_reads_back_event_for_event(parse):
    raw = b"".join(json_events.json_stream(sample_events(), 3000))
    parsed = parse(raw)
    assert parsed.retry == 3000
    assert parsed.comments == 3
    wanted = [e for e in _sample_events() if e is not None]
    assert [p.last_event_id for p in parsed.events] == [str(e.seq) for e in wanted]
    assert [json.loads(p.data) for p in parsed.events] == [e.data for e in wanted]
    assert {p.type for p in parsed.events} == {"message"}  # every event is unnamed


def test_json_stream_bytes_hold_no_raw_line_separators():
    raw = b"".join(json_events.json_stream(sample_events(), 3000))
    assert "\u2028".encode() not in raw and "\u2029".encode() not in raw
    # httpx's LineDecoder (str.splitlines) sees the same lines as the SSE parser.
    text = raw.decode()
    assert text.splitlines() == re.split(r"\r\n|\r|\n", text)[:-1]


# -- events.dumps ----------------------------------------------------------------

DUMPS_CASES = [
    pytest.param({"type": "delta", "content": "hi"}, '{"type":"delta","content":"hi"}', id="compact"),
    pytest.param({"a": [1, 2, {"b": None}], "c": True}, '{"a":[1,2,{"b":null}],"c":true}', id="nested"),
    pytest.param("é🙂日本語", '"é🙂日本語"', id="utf8-kept"),
    pytest.param("\u2028", '"\\u2028"', id="u2028"),
    pytest.param("a\x85b", '"a\\u0085b"', id="nel-splitlines-breaks-there-too"),
    pytest.param("\u2029", '"\\u2029"', id="u2029"),
    pytest.param("x\u2028y\u2029z\u2028", '"x\\u2028y\\u2029z\\u2028"', id="separators-mixed"),
    pytest.param("a\nb\r\nc\rd", '"a\\nb\\r\\nc\\rd"', id="line-breaks-escaped"),
    pytest.param("\x00\x1f\x7f", '"\\u0000\\u001f\x7f"', id="control-chars"),
    pytest.param('"quoted" \\ backslash', '"\\"quoted\\" \\\\ backslash"', id="quote-and-backslash"),
    pytest.param("\\u2028", '"\\\\u2028"', id="literal-backslash-u2028-text"),
    pytest.param("data: forged\n\nid: 9", '"data: forged\\n\\nid: 9"', id="forgery-attempt"),
    pytest.param({"k\u2028": "v"}, '{"k\\u2028":"v"}', id="separator-in-key"),
]


@pytest.mark.parametrize(("obj", "expected"), DUMPS_CASES)
def test_dumps_is_byte_exact(obj, expected):
    assert events.dumps(obj) == expected


@pytest.mark.parametrize(("obj", "expected"), DUMPS_CASES)
def test_dumps_round_trips_and_has_no_raw_line_breaks(obj, expected):
    text = events.dumps(obj)
    assert json.loads(text) == obj
    assert not set(text) & {"\n", "\r", "\u2028", "\u2029"}


def test_event_make_serialises_once_with_dumps():
    data = events.delta("é\u2028")
    event = Event.make(7, data)
    assert event.seq == 7 and event.type == "delta"
    assert event.json == events.dumps(data) == '{"type":"delta","content":"é\\u2028"}'


def test_error_event_shape():
    data = events.error(UpstreamTimeout())
    assert data["type"] == "error"
    assert data["error"]["code"] == "upstream_timeout"
    assert isinstance(data["error"]["message"], str) and data["error"]["message"]


# -- formats ---------------------------------------------------------------------


def test_ndjson_stream_is_byte_exact_and_skips_idle_gaps():
    assert list(json_events.ndjson_stream(sample_events())) == [
        b'{"type":"start","id":"gen_abc","model":"demo/echo"}\n',
        b'{"type":"delta","content":"a\\nb"}\n',
        b'{"type":"delta","content":"\\r\\n\\n\\nid: 99\\ndata: forged\\n\\n"}\n',
        '{"type":"delta","content":"🙂日本語\\u2028\\u2029"}\n'.encode(),
        b'{"type":"done","finish_reason":"stop","usage":{"prompt_tokens":3,"completion_tokens":4}}\n',
    ]


def test_ndjson_lines_split_on_lf_only_are_the_events():
    raw = b"".join(json_events.ndjson_stream(sample_events()))
    *lines, last = raw.split(b"\n")
    assert last == b""
    assert [json.loads(line) for line in lines] == [e.data for e in _sample_events() if e is not None]
    # A str.splitlines reader (httpx's iter_lines) sees the same lines.
    assert raw.decode().splitlines() == [line.decode() for line in lines]


def test_text_stream_is_the_deltas_bytes_only():
    chunks = list(text_formats.text_stream(sample_events()))
    assert chunks == [
        b"a\nb",
        b"\r\n\n\nid: 99\ndata: forged\n\n",
        "🙂日本語\u2028\u2029".encode(),
    ]


def test_text_stream_ends_quietly_at_an_error():
    stream = [
        Event.make(0, events.start("gen_x", "ollama/llama3")),
        Event.make(1, events.delta("par")),
        Event.make(2, events.error(UpstreamTimeout())),
    ]
    assert b"".join(text_formats.text_stream([stream])) == b"par"


def test_classic_stream_is_byte_exact():
    assert list(text_formats.classic_stream(sample_events(), 3000)) == [
        b"retry: 3000\n\n",
        b": ping\n\n",
        b"id: 1\ndata: a\ndata: b\n\n",
        b"id: 2\ndata: \ndata: \ndata: \ndata: id: 99\ndata: data: forged\ndata: \ndata: \n\n",
        b": ping\n\n",
        b": ping\n\n",
        "id: 3\ndata: 🙂日本語\u2028\u2029\n\n".encode(),
        # Browsers dispatch no event without a data line, so "done" carries an empty one.
        b"id: 4\nevent: done\ndata: \n\n",
    ]


def test_classic_stream_error_is_a_named_event_with_the_json_error():
    stream = [
        Event.make(0, events.start("gen_x", "ollama/llama3")),
        Event.make(1, events.delta("par")),
        Event.make(2, events.error(UpstreamTimeout())),
    ]
    chunks = list(text_formats.classic_stream([[e] for e in stream], 3000))
    assert chunks[:2] == [b"retry: 3000\n\n", b"id: 1\ndata: par\n\n"]
    assert chunks[2].startswith(b'id: 2\nevent: error\ndata: {"type":"error","error":{"code":"upstream_timeout"')
    assert chunks[2].endswith(b"}\n\n") and chunks[2].count(b"\n") == 4


@pytest.mark.parametrize("parse", PARSERS)
def test_classic_stream_reads_back_as_onmessage_text_then_done(parse):
    parsed = parse(b"".join(text_formats.classic_stream(sample_events(), 3000)))
    messages = [p for p in parsed.events if p.type == "message"]
    assert "".join(p.data for p in messages) == lf("a\nb\r\n\n\nid: 99\ndata: forged\n\n🙂日本語\u2028\u2029")
    assert [p.last_event_id for p in messages] == ["1", "2", "3"]
    assert parsed.events[-1] == Parsed("done", "", "4")
    assert [p.type for p in parsed.events].count("done") == 1


def test_a_replayed_batch_goes_out_as_one_write():
    batch = [Event.make(n, events.delta(str(n))) for n in range(3)]
    assert list(json_events.json_stream([batch], 3000))[1] == b"".join(sse.frame(e).encode() for e in batch)
    assert list(json_events.ndjson_stream([batch])) == [b"".join(f"{e.json}\n".encode() for e in batch)]
