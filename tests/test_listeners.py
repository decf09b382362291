"""The project's own listeners bind to the host they are given, never to all interfaces; the run
whose listeners are checked end to end is test_spine.py's (`loopback_listeners`)."""

from __future__ import annotations

import datetime

import psutil
from loopback_listeners import listening

from cdra.runtime.cluster import LOOPBACK, bound_store, free_port, local_address_towards


def test_bound_store_listens_on_the_given_host_only():
    port = free_port()
    store = bound_store(LOOPBACK, port, 1, True, datetime.timedelta(seconds=10))
    store.set("k", "v")
    assert store.get("k") == b"v"
    assert (LOOPBACK, port) in listening(psutil.Process().pid)
    assert not [a for a in listening(psutil.Process().pid) if a[1] == port and a[0] != LOOPBACK]


def test_local_address_towards_loopback_is_loopback():
    assert local_address_towards("127.0.0.1") == LOOPBACK
    assert local_address_towards("localhost") == LOOPBACK
