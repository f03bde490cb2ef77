"""What each search provider's API looks like on the wire: the request it takes and
the results in its answer. No I/O here: :mod:`agentd.tools.search` sends the request
(after the egress check) and hands the decoded answer back.

The shapes, as the providers publish them:

- SearXNG, its JSON API (docs.searxng.org, "Search API"; ``searx/webapp.py``):
  ``GET /search?q=...&format=json`` with ``language``, ``time_range`` (day, week,
  month, year), ``pageno``, ``safesearch``; the answer is ``{"query",
  "number_of_results", "results": [{"url", "title", "content", "engine", ...}],
  "answers", "corrections", "infoboxes", "suggestions", "unresponsive_engines"}``. An
  instance whose ``search.formats`` leaves out ``json`` answers 403.
- Brave Search API (api-dashboard.search.brave.com, "Web search"):
  ``GET /res/v1/web/search?q=...&count=N`` (at most 20) with ``freshness`` (pd, pw,
  pm, py), ``search_lang``; headers ``Accept: application/json`` and
  ``X-Subscription-Token``; the answer is ``{"type": "search", "query": {...}, "web":
  {"results": [{"title", "url", "description", "age", ...}]}}`` (no ``web`` when
  nothing was found; titles and descriptions carry ``<strong>`` markup); errors are
  ``{"type": "ErrorResponse", "error": {"code", "detail", "status", ...}}``, 429 for
  the rate limit.
- Tavily (docs.tavily.com, "Search"): ``POST /search`` with ``Authorization: Bearer
  <key>`` and the JSON body ``{"query", "max_results" (0-20), "search_depth",
  "topic", "time_range", "include_answer", ...}``; the answer is ``{"query", "answer",
  "results": [{"title", "url", "content", "score", ...}], "response_time"}``; errors
  are ``{"detail": {"error": "..."}}`` (401 key, 429 rate limit, 432/433 plan limits).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

__all__ = ["PROVIDERS", "Hit", "Query", "SearchProvider", "WireRequest"]

Freshness = Literal["day", "week", "month", "year"]


@dataclass(frozen=True, kw_only=True)
class Query:
    """One search as the tool was asked for it."""

    text: str
    count: int
    freshness: Freshness | None = None
    language: str | None = None


@dataclass(frozen=True, kw_only=True)
class WireRequest:
    """An HTTP request to the provider: ``path`` is joined to its base URL."""

    method: Literal["GET", "POST"]
    path: str
    params: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    json: Mapping[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class Hit:
    """One result, as the provider sent it (not yet cleaned)."""

    title: object
    url: object
    snippet: object


class SearchProvider(Protocol):
    """A search API: how to ask it, and how to read its answer."""

    def request(self, query: Query, key: str | None) -> WireRequest:
        """The request for ``query`` (``key``: the operator's key, if any)."""
        ...

    def results(self, answer: Any) -> list[Hit]:
        """The results in a decoded 200 answer; ValueError when it is not one."""
        ...

    def error(self, answer: Any) -> str | None:
        """What an error answer says, when it says something."""
        ...


def _list(answer: Any, *path: str) -> list[Any]:
    node = answer
    for key in path:
        if not isinstance(node, dict):
            raise ValueError(f"the answer has no {'.'.join(path)}")
        node = node.get(key)
        if node is None:  # (Brave leaves "web" out when nothing was found)
            return []
    if not isinstance(node, list):
        raise ValueError(f"{'.'.join(path)} is not a list")
    return node


def _hits(items: list[Any], snippet: str) -> list[Hit]:
    return [Hit(title=i.get("title"), url=i.get("url"), snippet=i.get(snippet))
            for i in items if isinstance(i, dict)]


class SearXNG:
    """A SearXNG instance's JSON API (``format=json`` must be enabled on it)."""

    def request(self, query: Query, key: str | None) -> WireRequest:
        params = {"q": query.text, "format": "json", "pageno": "1"}
        if query.language:
            params["language"] = query.language
        if query.freshness:
            params["time_range"] = query.freshness
        # No key of its own; one behind a reverse proxy that wants a bearer token.
        headers = {"Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return WireRequest(method="GET", path="/search", params=params, headers=headers)

    def results(self, answer: Any) -> list[Hit]:
        return _hits(_list(answer, "results"), "content")

    def error(self, answer: Any) -> str | None:
        return answer.get("error") if isinstance(answer, dict) else None


_BRAVE_FRESHNESS = {"day": "pd", "week": "pw", "month": "pm", "year": "py"}


class Brave:
    """The Brave Search API's web search."""

    def request(self, query: Query, key: str | None) -> WireRequest:
        params = {"q": query.text, "count": str(min(query.count, 20))}
        if query.freshness:
            params["freshness"] = _BRAVE_FRESHNESS[query.freshness]
        if query.language:
            params["search_lang"] = query.language.split("-")[0]
        return WireRequest(method="GET", path="/res/v1/web/search", params=params,
                           headers={"Accept": "application/json",
                                    "X-Subscription-Token": key or ""})

    def results(self, answer: Any) -> list[Hit]:
        return _hits(_list(answer, "web", "results"), "description")

    def error(self, answer: Any) -> str | None:
        error = answer.get("error") if isinstance(answer, dict) else None
        if isinstance(error, dict):
            return str(error.get("detail") or error.get("code") or "")
        return None


class Tavily:
    """Tavily's search API."""

    def request(self, query: Query, key: str | None) -> WireRequest:
        body: dict[str, Any] = {
            "query": query.text, "max_results": min(query.count, 20),
            "search_depth": "basic", "topic": "general", "include_answer": False,
            "include_raw_content": False, "include_images": False}
        if query.freshness:
            body["time_range"] = query.freshness
        return WireRequest(method="POST", path="/search", json=body,
                           headers={"Authorization": f"Bearer {key or ''}",
                                    "Accept": "application/json"})

    def results(self, answer: Any) -> list[Hit]:
        return _hits(_list(answer, "results"), "content")

    def error(self, answer: Any) -> str | None:
        detail = answer.get("detail") if isinstance(answer, dict) else None
        if isinstance(detail, dict):
            return str(detail.get("error") or "")
        return str(detail) if isinstance(detail, str) else None


#: The API of each ``kind`` of ``[web_search.providers.NAME]``.
PROVIDERS: dict[str, SearchProvider] = {"searxng": SearXNG(), "brave": Brave(),
                                        "tavily": Tavily()}
