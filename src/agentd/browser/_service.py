"""The daemon's browsers: one Chromium per agent, one page per session, driven by
Playwright's async API.

Each browser is started on first use for its agent's network grant and reaches the
network only through an :class:`~agentd.sandbox.egress.EgressProxy` of that grant,
the same check as ``http_fetch`` and commands: Chromium's ``--proxy-server`` points at
it (loopback included: ``<-loopback>``), it resolves no name itself
(``--host-resolver-rules``), WebRTC may not send UDP outside the proxy. Under a root
daemon Chromium runs in a network namespace of its own where only the proxy listens
(:meth:`EgressProxy.inlet`), as the agent's uid (or ``nobody``) with no capabilities
and its own sandbox on: a compromised renderer reaches no network but the proxy and
no file but the world's and its uid's. Elsewhere (a daemon that is not root) it runs
as the daemon's uid on the host's network, behind the proxy on a loopback port that
wants a secret. Every request
is also checked in Playwright (a route on each page's context) before it leaves, so
that a refusal can be reported to the model with its reason; navigations to anything
but http(s) (``file:``, ``chrome:``, ``data:``, ``view-source:``...) are refused
there. Downloads are off, service workers blocked (their requests would skip the
route). A browser is closed when its agent goes to sleep, when it has had no call
for ``[browser] idle_s``, when its grant changes, and with the daemon; at most
``[browser] max_browsers`` run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import secrets
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from agentd.browser._dom import SAME_TAB_JS
from agentd.config import BrowserConfig
from agentd.errors import ToolError
from agentd.sandbox import hostfs as _hostfs
from agentd.sandbox.connections import Connections, Owner
from agentd.sandbox.egress import (
    PROXY_PORT,
    EgressProxy,
    EgressRules,
    Grant,
    Inlet,
    check_async,
)
from agentd.sandbox.limits import starting
from agentd.sandbox.probes import seal_probe

if TYPE_CHECKING:
    from playwright.async_api import (
        Browser,
        BrowserContext,
        Page,
        Playwright,
        Response,
        Route,
    )

__all__ = ["Browsers", "Tab", "problem"]

log = logging.getLogger(__name__)

#: Chromium's switches besides the proxy (Playwright adds its own automation ones).
CHROMIUM_ARGS = (
    # Nothing of Chromium's own phoning home, which could skip the proxy's checks.
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-domain-reliability", "--disable-client-side-phishing-detection",
    "--disable-breakpad", "--no-first-run", "--no-default-browser-check", "--no-pings",
    "--disable-default-apps", "--disable-extensions", "--mute-audio",
    "--safebrowsing-disable-auto-update", "--metrics-recording-only",
    # The last --disable-features wins: Playwright's own list (1.5x), then Chromium's
    # calls home from a page (a form asks Google's autofill server, translation...).
    "--disable-features=" + ",".join((
        "AvoidUnnecessaryBeforeUnloadCheckSync", "DestroyProfileOnBrowserClose",
        "HttpsUpgrades", "HttpsFirstBalancedModeAutoEnable", "LensOverlay", "MediaRouter",
        "PaintHolding", "ThirdPartyStoragePartitioning",
        "AvoidCorsURLLoaderRestartOnRedirect", "OptimizationHints",
        "NetworkTimeServiceQuerying", "AimEnabled", "PreconnectToSearch",
        "AutofillServerCommunication", "Translate", "OptimizationHintsFetching",
        "OptimizationGuideModelDownloading", "InterestFeedContentSuggestions",
        "CertificateTransparencyComponentUpdater", "DialMediaRouteProvider",
        "SafeBrowsingEnhancedProtection", "PrivacySandboxSettings4", "BackForwardCache")),
    # QUIC is UDP, which no proxy carries.
    "--disable-quic",
    # No name is resolved by Chromium (DNS prefetch, a direct connection): the proxy
    # resolves, after its check. (127.0.0.1 is the proxy itself.)
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--dns-prefetch-disable",
    # WebRTC: no UDP that does not go through the proxy (and so none at all). The first
    # switch is the desktop browser's preference; the headless shell has no such
    # preference and reads only the second (without it, it gathers UDP candidates).
    "--webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--enforce-webrtc-ip-permission-check",
)
_CLOSE_TIMEOUT_S = 10.0


def problem(config: BrowserConfig) -> str | None:
    """Why the browser tools cannot run here (None: they can)."""
    if importlib.util.find_spec("playwright") is None:
        return ("the Python package playwright is not installed (pip install "
                "'agentd[browser]')")
    if not (os.path.isfile(config.executable) and os.access(config.executable, os.X_OK)):
        return (f"no Chromium at {config.executable} ([browser] executable; on Debian: "
                "apt-get install chromium-headless-shell)")
    return None


def _confining_tools() -> tuple[str, str] | None:
    """``nsenter`` and ``setpriv`` (util-linux), which a root daemon's browsers are
    started with; None where either is missing."""
    nsenter, setpriv = shutil.which("nsenter"), shutil.which("setpriv")
    return (nsenter, setpriv) if nsenter and setpriv else None


def _directories(owner: tuple[int, int] | None) -> str:
    """A browser's directory: ``home`` inside it (``owner``'s, who runs Chromium)."""
    base = tempfile.mkdtemp(prefix="agentd-browser-")
    home = os.path.join(base, "home")
    os.mkdir(home, 0o700)
    if owner is not None:
        os.chmod(base, 0o711)  # Chromium's uid reaches its home, lists nothing
        os.chown(home, *owner)
    return base


#: Run by Playwright (as root) in place of Chromium: gives Chromium its profile, then
#: starts it in the browser's network namespace as the sandbox's uid, without
#: capabilities or a way to regain privileges; where the host can be made read-only
#: (``seal``: :mod:`agentd.sandbox.hostfs`), with the host read-only but for its own
#: directory and profile, and private ``/tmp``, ``/dev/shm`` (nothing of the uid
#: outlives the browser, so the uid can be given to another agent later).
_LAUNCHER = """#!/bin/sh
profile={base}
for arg do
  case "$arg" in
    --user-data-dir=*) profile="${{arg#--user-data-dir=}}"
                       chown -R -- {ids} "$profile" || exit 1 ;;
  esac
done
exec {nsenter} --net={netns} -- {seal}{setpriv} --reuid={uid} --regid={gid} \
  --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs -- {chromium} "$@"
"""


def _write_launcher(base: str, chromium: str, tools: tuple[str, str], inlet: Inlet,
                    ids: tuple[int, int], *, sealed: bool) -> str:
    path = os.path.join(base, "launch")
    seal = ""
    if sealed:
        program = os.path.dirname(os.path.realpath(chromium))
        seal = (f"{shlex.quote(sys.executable)} -I -S {shlex.quote(_hostfs.__file__)} "
                f"--show {shlex.quote(program)} {shlex.quote(base)} \"$profile\" -- ")
    text = _LAUNCHER.format(
        ids=f"{ids[0]}:{ids[1]}", uid=ids[0], gid=ids[1], nsenter=shlex.quote(tools[0]),
        setpriv=shlex.quote(tools[1]), chromium=shlex.quote(chromium),
        netns=shlex.quote(f"/proc/{os.getpid()}/fd/{inlet.netns}"),
        base=shlex.quote(base), seal=seal)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    return path


def _refused(message: str) -> ToolError:
    return ToolError(message, code="network_denied")


@dataclass(eq=False)
class Tab:
    """One session's page in its agent's browser (a context of its own: cookies and
    storage are the session's). Use it under :meth:`Browsers.tab` only."""

    context: BrowserContext
    page: Page
    #: The attribute the element references are written in: random per tab, so that
    #: a page cannot know it beforehand.
    attr: str
    used: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Requests refused since the tools last reported them (URL: why).
    blocked: list[str] = field(default_factory=list)
    #: Pages replaced by one they opened, being closed (closing the context ends them).
    _closing: set[asyncio.Future[None]] = field(default_factory=set)

    def adopt(self, page: Page) -> None:
        """A page the current one opened (``target=_blank``, ``window.open``) becomes
        the current one; the older one is closed."""
        if page is self.page:
            return
        old, self.page = self.page, page
        task = asyncio.ensure_future(old.close())
        self._closing.add(task)
        task.add_done_callback(self._closed)

    def _closed(self, task: asyncio.Future[None]) -> None:
        self._closing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("browser: closing a replaced page failed: %s", task.exception())

    def note_response(self, response: Response) -> None:
        headers = response.headers
        # (a refusal of the route's own was noted by the route)
        if (headers.get("x-agentd-egress") == "refused" and "x-agentd-route" not in headers
                and len(self.blocked) < 50):
            self.blocked.append(f"{response.url[:200]}: refused by the egress proxy "
                                f"(HTTP {response.status})")

    def take_blocked(self) -> list[str]:
        out, self.blocked = self.blocked, []
        return out


@dataclass(eq=False)
class _Browser:
    grant: Grant
    rules: EgressRules
    user: tuple[int, int] | None
    browser: Browser
    proxy: EgressProxy
    #: The browser's own directory (its home, its launcher), removed with it.
    base: str
    #: The network namespace it runs in (None: the host's, behind the TCP proxy).
    inlet: Inlet | None
    tabs: dict[str, Tab] = field(default_factory=dict)
    used: float = field(default_factory=time.monotonic)
    busy: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Browsers:
    """The browsers of every agent. Owned by the runtime (``ctx.service(Browsers)``)."""

    def __init__(self, config: BrowserConfig, *, isolate: bool = True,
                 connections: Connections | None = None) -> None:
        self.config = config
        #: The daemon's count of egress connections (a browser's proxy admits its
        #: connections to it, under the agent's and tenant's caps too).
        self.connections = connections or Connections(total=256, per_agent=256)
        #: Under a root daemon, each Chromium in a network namespace of its own, as
        #: the agent's uid (False: on the host's network, behind a TCP proxy, as the
        #: daemon's uid, which is what a daemon that is not root always gets).
        self.isolate = isolate
        self._playwright: Playwright | None = None
        self._browsers: dict[str, _Browser] = {}
        self._lock = asyncio.Lock()
        self._pending: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def running(self) -> int:
        """Browsers running now."""
        return len(self._browsers)

    # -- use ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def tab(self, agent_id: str, session: str, grant: Grant, rules: EgressRules,
                  *, user: tuple[int, int] | None = None, create: bool = True,
                  tenant: str = "") -> AsyncIterator[Tab]:
        """The page of ``session`` in ``agent_id``'s browser (started for ``grant``;
        under a root daemon as ``user``, the agent's uid and gid, or ``nobody``), held
        for one call. ``create`` False: a session with no page is refused. The
        browser reaches the network only while a call holds it: between calls its
        proxy drops every connection and closes new ones at once, so a page left open holds
        no descriptor of the daemon's."""
        self._admit(grant)
        entry = await self._browser(agent_id, grant, rules, user, create=create,
                                    tenant=tenant)
        try:
            async with entry.lock:
                tab = entry.tabs.get(session)
                if tab is not None and tab.page.is_closed():
                    await self._close_tab(entry, session)
                    tab = None
                if tab is None:
                    if not create:
                        raise ToolError("no page is open in this session: call "
                                        "browser_open first", code="browser_no_page")
                    tab = await self._new_tab(entry, session)
            async with tab.lock:
                tab.used = entry.used = time.monotonic()
                try:
                    yield tab
                finally:
                    tab.used = entry.used = time.monotonic()
        finally:
            self._leave(entry)

    async def start(self, agent_id: str, grant: Grant, rules: EgressRules,
                    *, user: tuple[int, int] | None = None, tenant: str = "") -> None:
        """Start ``agent_id``'s browser for ``grant`` if it is not running (within
        ``launch_timeout_s``): a call's own time limit then counts only its work."""
        self._admit(grant)
        entry = await self._browser(agent_id, grant, rules, user, create=True,
                                    tenant=tenant)
        self._leave(entry)

    @staticmethod
    def _enter(entry: _Browser) -> None:
        entry.busy += 1
        entry.proxy.resume()

    @staticmethod
    def _leave(entry: _Browser) -> None:
        entry.busy -= 1
        if not entry.busy:
            entry.proxy.suspend()  # (it reaches the network only during a call)

    def _admit(self, grant: Grant) -> None:
        """Refuse a call while the daemon stops, or for an agent with no network."""
        if self._closed:
            raise ToolError("the daemon is stopping", code="browser_unavailable")
        if not grant:
            raise _refused("this agent has no network (settings.policy.network)")

    async def discard_tab(self, agent_id: str, session: str) -> None:
        """Close a session's page (after a call that left it in an unknown state)."""
        entry = self._browsers.get(agent_id)
        if entry is not None:
            await self._close_tab(entry, session)

    async def _browser(self, agent_id: str, grant: Grant, rules: EgressRules,
                       user: tuple[int, int] | None, *, create: bool, tenant: str = ""
                       ) -> _Browser:
        owner = Owner(tenant=tenant, agent=agent_id)
        async with self._lock:
            entry = self._browsers.get(agent_id)
            if entry is not None and (entry.grant != grant or entry.rules != rules
                                      or entry.user != user
                                      or entry.proxy.owner != owner
                                      or not entry.browser.is_connected()):
                # A changed grant gets a new browser, never the old one's network.
                await self._close_browser(agent_id)
                entry = None
            if entry is not None:
                self._enter(entry)  # (under the lock: no other call may close it now)
                return entry
            if not create:
                raise ToolError("no page is open in this session: call browser_open "
                                "first", code="browser_no_page")
            if len(self._browsers) >= self.config.max_browsers:
                idle = [(e.used, key) for key, e in self._browsers.items() if not e.busy]
                if not idle:
                    raise ToolError(
                        f"all {self.config.max_browsers} browsers are in use "
                        "([browser] max_browsers); try again later", code="browser_busy")
                await self._close_browser(min(idle)[1])
            entry = await self._launch(grant, rules, user, owner)
            self._browsers[agent_id] = entry
            self._enter(entry)
            return entry

    async def _launch(self, grant: Grant, rules: EgressRules,
                      user: tuple[int, int] | None, owner: Owner) -> _Browser:
        if self._playwright is None:
            from playwright.async_api import async_playwright

            try:
                self._playwright = await async_playwright().start()
            except Exception as exc:
                log.warning("browser: Playwright did not start: %s", exc)
                raise ToolError(f"the browser did not start (Playwright: {exc})"[:400],
                                code="browser_unavailable") from None
        # (refused for a uid being reclaimed; a sweep of it waits for this start)
        with starting(user if self.isolate else None) as ids:
            return await self._launch_as(grant, rules, user,
                                         ids if self.isolate else None, owner)

    async def _launch_as(self, grant: Grant, rules: EgressRules,
                         user: tuple[int, int] | None, ids: tuple[int, int] | None,
                         owner: Owner) -> _Browser:
        assert self._playwright is not None
        secret = secrets.token_urlsafe(24)
        proxy = EgressProxy(grant, rules, "", secret=secret, owner=owner,
                            connections=self.connections)
        launcher = _confining_tools() if ids is not None else None
        inlet = await proxy.inlet() if launcher is not None else None
        base = await asyncio.to_thread(_directories, None if inlet is None else ids)
        try:
            if inlet is not None and ids is not None and launcher is not None:
                # Its own network namespace (only lo, where the proxy listens), as the
                # agent's uid: even a compromised Chromium reaches nothing else.
                sealed = await asyncio.to_thread(seal_probe) is None
                executable = await asyncio.to_thread(
                    _write_launcher, base, self.config.executable, launcher, inlet, ids,
                    sealed=sealed)
                server, sandboxed = f"http://127.0.0.1:{PROXY_PORT}", True
            else:
                if self.isolate and os.geteuid() == 0:
                    log.warning("browser: Chromium runs as root on the host's network "
                                "(no network namespace here, or no nsenter/setpriv)")
                executable = self.config.executable
                server = f"http://127.0.0.1:{await proxy.start_tcp()}"
                sandboxed = os.geteuid() != 0
            home = os.path.join(base, "home")
            browser = await self._playwright.chromium.launch(
                executable_path=executable, headless=True,
                chromium_sandbox=self.config.chromium_sandbox and sandboxed,
                proxy={"server": server, "bypass": "<-loopback>",
                       "username": "agentd", "password": secret},
                args=list(CHROMIUM_ARGS),
                # Not the daemon's environment (its tokens and keys).
                env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home,
                     "XDG_CONFIG_HOME": home, "XDG_CACHE_HOME": home,
                     "LANG": "C.UTF-8", "TZ": "UTC"},
                handle_sigint=False, handle_sigterm=False, handle_sighup=False,
                timeout=self.config.launch_timeout_s * 1000)
        except BaseException as exc:
            await proxy.close()
            if inlet is not None:
                inlet.close()
            await asyncio.to_thread(shutil.rmtree, base, True)
            if isinstance(exc, Exception) and not isinstance(exc, ToolError):
                log.warning("browser: Chromium did not start: %s", exc)
                first = (str(exc).strip().splitlines() or [""])[0][:300]
                raise ToolError(f"the browser did not start ({type(exc).__name__}: "
                                f"{first}); the daemon's log says more",
                                code="browser_unavailable") from None
            raise
        log.info("browser started (%d running; %s)", len(self._browsers) + 1,
                 f"own network namespace, uid {ids[0]}"
                 if inlet is not None and ids is not None else "host network, daemon's uid")
        return _Browser(grant=grant, rules=rules, user=user, browser=browser, proxy=proxy,
                        base=base, inlet=inlet)

    async def _new_tab(self, entry: _Browser, session: str) -> Tab:
        if len(entry.tabs) >= self.config.max_pages:
            idle = [(t.used, key) for key, t in entry.tabs.items() if not t.lock.locked()]
            if not idle:
                raise ToolError(f"this agent's {self.config.max_pages} pages are all in "
                                "use ([browser] max_pages)", code="browser_busy")
            await self._close_tab(entry, min(idle)[1])
        from playwright.async_api import Error as PlaywrightError

        try:
            context = await entry.browser.new_context(
                accept_downloads=False, service_workers="block",
                viewport={"width": 1280, "height": 800})
        except PlaywrightError as exc:
            raise ToolError(f"the browser could not open a page: {exc.message[:300]}",
                            code="browser_error") from None
        context.set_default_timeout(self.config.action_timeout_s * 1000)
        context.set_default_navigation_timeout(self.config.navigation_timeout_s * 1000)
        await context.add_init_script(SAME_TAB_JS)
        page = await context.new_page()
        tab = Tab(context=context, page=page, attr=f"data-agentd-{secrets.token_hex(4)}")
        await context.route("**/*", lambda route: self._route(entry, tab, route))
        context.on("page", tab.adopt)
        # What the route does not see (a redirect's target) the proxy refuses: say so.
        context.on("response", tab.note_response)
        entry.tabs[session] = tab
        return tab

    async def _route(self, entry: _Browser, tab: Tab, route: Route) -> None:
        """Every request of a tab's pages, before it leaves: refused unless the
        agent's grant and the operator's rules allow it (the proxy checks again)."""
        request = route.request
        url = request.url
        navigation = request.is_navigation_request()
        try:
            why = await self._refusal(entry, url, navigation=navigation)
        except Exception:  # a check that fails refuses
            log.exception("browser: checking a request failed")
            why = "the check failed"
        with contextlib.suppress(Exception):  # the page may be gone meanwhile
            if why is None:
                await route.continue_()
                return
            if len(tab.blocked) < 50:
                tab.blocked.append(f"{url[:200]}: {why}")
            if navigation:
                # A page saying why, as the proxy's refusal does (an aborted navigation
                # would load Chromium's error page after it, under the next one).
                await route.fulfill(status=403, content_type="text/plain; charset=utf-8",
                                    headers={"X-Agentd-Egress": "refused",
                                             "X-Agentd-Route": "1"},
                                    body=f"agentd: {why}\n")
            else:
                await route.abort("blockedbyclient")

    async def _refusal(self, entry: _Browser, url: str, *, navigation: bool) -> str | None:
        try:
            parts = urlsplit(url)
            scheme = parts.scheme.lower()
            host = parts.hostname
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            return "not a valid URL"
        if scheme in ("http", "https"):
            if not host:
                return "no host"
            try:
                await check_async(host, port, entry.grant, entry.rules)
            except ToolError as exc:
                return exc.message
            return None
        if scheme in ("data", "blob") and not navigation:
            return None  # a page's own content (an inline image, a script's blob)
        if url == "about:blank":
            return None
        return f"{scheme}: URLs are not opened (only http and https)"

    # -- closing -----------------------------------------------------------------------

    async def _close_tab(self, entry: _Browser, session: str) -> None:
        tab = entry.tabs.pop(session, None)
        if tab is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                    await tab.context.close()

    async def _close_browser(self, agent_id: str) -> None:
        entry = self._browsers.pop(agent_id, None)
        if entry is None:
            return
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await entry.browser.close()
        except Exception as exc:
            log.warning("browser: closing a browser failed: %s", exc)
        await entry.proxy.close()
        if entry.inlet is not None:
            entry.inlet.close()
        await asyncio.to_thread(shutil.rmtree, entry.base, True)
        log.info("browser closed (%d running)", len(self._browsers))

    async def close_agent(self, agent_id: str) -> None:
        """Close ``agent_id``'s browser (the agent went to sleep, was stopped...)."""
        async with self._lock:
            await self._close_browser(agent_id)

    def close_agent_later(self, agent_id: str) -> None:
        """:meth:`close_agent` from synchronous code (an agent put to sleep)."""
        if agent_id not in self._browsers:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self.close_agent(agent_id))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def close_idle(self) -> int:
        """Close the browsers with no call for ``idle_s`` (a housekeeping job)."""
        cutoff = time.monotonic() - self.config.idle_s
        closed = 0
        async with self._lock:
            for agent_id, entry in list(self._browsers.items()):
                if not entry.busy and entry.used < cutoff:
                    await self._close_browser(agent_id)
                    closed += 1
        return closed

    async def close(self) -> None:
        """Close every browser and Playwright (the daemon stops)."""
        self._closed = True
        await asyncio.gather(*self._pending, return_exceptions=True)
        async with self._lock:
            for agent_id in list(self._browsers):
                await self._close_browser(agent_id)
            if self._playwright is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                        await self._playwright.stop()
                self._playwright = None

    def describe(self) -> dict[str, Any]:
        return {"running": len(self._browsers), "max": self.config.max_browsers}
