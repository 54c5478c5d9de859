# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one retry helper of the collection's network clients (OCI registry, S3).

Opt-in per call: a caller makes a ``Retry`` for one request and asks it, after each failed try, whether
to try again. Only transient failures are retried (a connection reset, refused or aborted, a broken
pipe, a dropped keep-alive connection, a timeout; HTTP 429, 502, 503 and 504), with a jittered
exponential backoff and a bounded number of tries. A request that is not idempotent (POST, PATCH) is
never retried: a POST whose answer was lost may have been carried out (an upload session opened, a
blob mounted), and a second one would do it again.

Python 3 standard library only. Private to this collection: the API may change without notice.
"""

from __future__ import annotations

import http.client
import random
import socket
import time

TRANSIENT_STATUS = frozenset((429, 502, 503, 504))
# S3 documents 500 InternalError as retryable (its SDKs retry it); the S3 clients pass statuses=S3_TRANSIENT_STATUS.
S3_TRANSIENT_STATUS = TRANSIENT_STATUS | frozenset((500,))
IDEMPOTENT_METHODS = frozenset(("GET", "HEAD", "PUT", "DELETE", "OPTIONS"))
BASE_DELAY = 0.5   # seconds before the first retry (times 0.5 to 1.5, the jitter)
MAX_DELAY = 8.0    # the longest wait before one retry, before the jitter


def idempotent(method):
    return str(method).upper() in IDEMPOTENT_METHODS


def transient_exception(exc, refused=True):
    """True when ``exc``, or an exception it was raised from (``raise ... from e``), is a transient transport
    failure. refused=False: a refused connection is an answer (nothing listens there), not retried."""
    depth = 0
    while exc is not None and depth < 8:
        if isinstance(exc, ConnectionRefusedError):
            return refused
        if isinstance(exc, (ConnectionError, socket.timeout, TimeoutError, http.client.IncompleteRead)):
            return True
        exc, depth = exc.__cause__, depth + 1
    return False


def delay(attempt, base=BASE_DELAY, cap=MAX_DELAY, rand=random.random):
    """Seconds to wait after failed try number ``attempt`` (0 for the first): min(cap, base * 2**attempt),
    times a random factor from 0.5 to 1.5 so that parallel clients do not retry in step."""
    return min(cap, base * 2 ** attempt) * (0.5 + rand())


class Retry(object):
    """The tries of one request.

    method: the request's method; one that is not idempotent gets one try whatever ``attempts`` says.
    attempts: the most tries (1: no retry). After a failed try call ``again(exc=...)`` or ``again(status=...)``:
    it sleeps the backoff and returns True when the failure is transient and tries remain, else False."""

    def __init__(self, method="GET", attempts=3, refused=True, statuses=TRANSIENT_STATUS, base=BASE_DELAY,
                 cap=MAX_DELAY, sleep=time.sleep, rand=random.random):
        self.method = str(method).upper()
        self.attempts = max(1, int(attempts)) if idempotent(method) else 1
        self.refused, self.statuses = refused, frozenset(statuses)
        self.base, self.cap, self.sleep, self.rand = base, cap, sleep, rand
        self.attempt = 0   # failed tries so far that were followed by another

    def transient(self, exc=None, status=None):
        if exc is not None:
            return transient_exception(exc, self.refused)
        return status in self.statuses

    def again(self, exc=None, status=None):
        if self.attempt + 1 >= self.attempts or not self.transient(exc, status):
            return False
        self.sleep(delay(self.attempt, self.base, self.cap, self.rand))
        self.attempt += 1
        return True


def call(fn, method="GET", attempts=3, **kwargs):
    """``fn()``, tried again while it raises a transient failure (see Retry; kwargs go to it)."""
    r = Retry(method, attempts, **kwargs)
    while True:
        try:
            return fn()
        except Exception as e:  # pylint: disable=broad-except  # re-raised unless transient
            if not r.again(exc=e):
                raise
