"""Imported only by the CeleryExecutor's fork server (see sparkflow.executors.celery), on start: the fork server gets
SIGTERM when its worker dies, even by kill -9, and dies; its task processes then get SIGTERM in turn."""

from __future__ import annotations

import contextlib
import ctypes
import signal

_PR_SET_PDEATHSIG = 1

with contextlib.suppress(OSError, AttributeError):
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
