"""Network namespaces the daemon makes for a sandbox (root only): an empty one with
``lo`` up and a listening socket on its ``127.0.0.1:3128``, made by a thread of the
daemon that enters it and comes back (a network namespace is per thread). The
sandbox then joins it (``setns`` in the child, before the uid drops), and the daemon
serves the socket itself: no forwarder process, no python start-up in the sandbox.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import fcntl
import functools
import os
import socket
import struct
import threading

CLONE_NEWNET = 0x40000000
_SIOCSIFFLAGS = 0x8914
# struct ifreq for "lo" with IFF_UP | IFF_LOOPBACK | IFF_RUNNING
LO_UP = struct.pack("16sH22x", b"lo", 0x1 | 0x8 | 0x40)
_lock = threading.Lock()
_pool: list[concurrent.futures.ThreadPoolExecutor] = []


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.unshare.argtypes = [ctypes.c_int]
    libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc


def _check(result: int) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def loopback_up() -> None:
    """Bring ``lo`` up in the calling thread's network namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock, _SIOCSIFFLAGS, LO_UP)


def _make(port: int) -> tuple[int, socket.socket]:
    libc = _libc()
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(libc.unshare(CLONE_NEWNET))
        try:
            netns = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                loopback_up()
                # IPPROTO_TCP: asyncio sets TCP_NODELAY only on a socket whose
                # proto says TCP (else every reply waits for a delayed ACK).
                listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM,
                                         socket.IPPROTO_TCP)
                try:
                    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    listener.bind(("127.0.0.1", port))
                    listener.listen(64)
                    listener.setblocking(False)
                except BaseException:
                    listener.close()
                    raise
            except BaseException:
                os.close(netns)
                raise
        finally:
            # Back home, or this thread must never run anything else (it would
            # resolve and connect from inside an empty namespace): its pool retires.
            if libc.setns(home, CLONE_NEWNET) != 0:
                _retire()
                raise OSError(ctypes.get_errno(), "cannot leave a new network namespace")
    finally:
        os.close(home)
    return netns, listener


def _retire() -> None:
    with _lock:
        if _pool:
            _pool.pop().shutdown(wait=False)


def make(port: int) -> concurrent.futures.Future[tuple[int, socket.socket]]:
    """A new network namespace (its descriptor) and a socket listening on its
    ``127.0.0.1:port``, made on a thread of its own (blocking: run it there)."""
    with _lock:
        if not _pool:
            _pool.append(concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="agentd-netns"))
        return _pool[0].submit(_make, port)


def usable() -> bool:
    """Whether this process may make network namespaces (root)."""
    return os.geteuid() == 0
