"""Ollama's NDJSON split into whole lines as bytes, whatever the network reads."""

from __future__ import annotations

import pytest

from providers.ollama import iter_lines
from sluice.errors import UpstreamError

# -- NDJSON lines ---------------------------------------------------------------


def test_iter_lines_keeps_utf8_split_across_chunks_whole():
    data = '{"c":"é日🙂"}\n{"c":"x"}\n'.encode()
    for cut in range(1, len(data)):
        chunks = [data[:cut], data[cut:]]
        assert list(iter_lines(chunks)) == [b'{"c":"\xc3\xa9\xe6\x97\xa5\xf0\x9f\x99\x82"}', b'{"c":"x"}']


def test_iter_lines_splits_on_lf_only_and_refuses_oversized_lines():
    assert list(iter_lines([b'{"c":"a\\u2028\r"}\n\n', b"tail"])) == [b'{"c":"a\\u2028\r"}', b"tail"]
    with pytest.raises(UpstreamError):
        list(iter_lines([b"x" * 10, b"y" * 10], max_line=15))
