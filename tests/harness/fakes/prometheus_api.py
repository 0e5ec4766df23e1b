"""A behavioural fake of Prometheus' HTTP query API (``GET /api/v1/query``), stricter than the
real one: it evaluates only instant-vector selectors (``name{label="value",...}``), optionally
inside ``rate(...[range])`` and ``sum(...)`` / ``sum by (labels) (...)``, over series it is
given; any other expression is the ``bad_data`` parse error Prometheus answers for invalid
PromQL (HTTP 400, ``{"status": "error", "errorType": "bad_data", "error": ...}``; prometheus
``web/api/v1/api.go``). A range selector on its own answers a ``matrix``, as Prometheus does.
"""

from __future__ import annotations

import re

_SELECTOR = re.compile(r'^([A-Za-z_:][A-Za-z0-9_:]*)(\{((?:\s*[A-Za-z_]\w*\s*=\s*"[^"]*"\s*,?)*)\})?$')
_LABEL = re.compile(r'([A-Za-z_]\w*)\s*=\s*"([^"]*)"')
_RANGE = re.compile(r"^(.*)\[(\d+[smhd])\]$")


class FakePrometheus:
    """``series``: (labels with ``__name__``, value) pairs; a rate is the value itself."""

    def __init__(self, series: list[tuple[dict[str, str], float]]):
        self.series = series
        self.queries: list[str] = []

    def __call__(self, method, path, query, body):
        if path != "/api/v1/query" or method != "GET":
            return 404, {"status": "error", "errorType": "not_found", "error": path}
        expression = query.get("query", "").strip()
        self.queries.append(expression)
        try:
            kind, result = self._evaluate(expression)
        except ValueError as err:
            return 400, {"status": "error", "errorType": "bad_data",
                         "error": f'invalid parameter "query": {err}'}
        return 200, {"status": "success", "data": {"resultType": kind, "result": result}}

    def _evaluate(self, text: str):
        grouped = re.match(r"^sum(?:\s+by\s*\(([\w,\s]*)\))?\s*\((.*)\)$", text, re.S)
        if grouped:
            kind, inner = self._evaluate(grouped.group(2).strip())
            if kind != "vector":
                raise ValueError("1:1: parse error: expected type instant vector in aggregation")
            keys = [k.strip() for k in (grouped.group(1) or "").split(",") if k.strip()]
            groups: dict[tuple, float] = {}
            for item in inner:
                key = tuple((k, item["metric"].get(k, "")) for k in keys)
                groups[key] = groups.get(key, 0.0) + float(item["value"][1])
            return "vector", [{"metric": dict(k), "value": [0, repr(v)]} for k, v in groups.items()]
        rated = re.match(r"^rate\s*\((.*)\)$", text, re.S)
        if rated:
            kind, inner = self._evaluate(rated.group(1).strip())
            if kind != "matrix":
                raise ValueError("1:6: parse error: expected type range vector in call to function"
                                 ' "rate", got instant vector')
            return "vector", [{"metric": {k: v for k, v in i["metric"].items() if k != "__name__"},
                               "value": i["values"][-1]} for i in inner]
        ranged = _RANGE.match(text)
        if ranged:
            _, inner = self._evaluate(ranged.group(1).strip())
            return "matrix", [{"metric": i["metric"], "values": [i["value"]]} for i in inner]
        selector = _SELECTOR.match(text)
        if not selector:
            raise ValueError(f"1:1: parse error: unexpected character in {text!r}")
        wanted = {"__name__": selector.group(1), **dict(_LABEL.findall(selector.group(3) or ""))}
        found = [{"metric": dict(labels), "value": [0, repr(value)]} for labels, value in self.series
                 if all(labels.get(k) == v for k, v in wanted.items())]
        return "vector", found
