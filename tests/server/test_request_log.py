"""The request log line stays one line whatever a client puts in its path."""

from __future__ import annotations

import json

from kvserve.server.request_log import RequestLogRecord


def test_a_path_with_unicode_line_breaks_gives_one_parseable_line():
    path = "/admin/models/\u00d6\x85x\u2028y\u2029\n"
    line = RequestLogRecord("GET", path).line()
    assert len(line.splitlines()) == 1
    assert json.loads(line)["path"] == path and "Ö" in line  # other text stays readable
