# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one error type of the collection's network helpers (S3, MinIO admin, OCI registry).

Private to this collection: the API may change without notice.
"""

from __future__ import annotations


class OnpremError(Exception):
    """A refusal or failure whose message names what went wrong and the fix.

    kind: ``input`` (bad parameters, nothing was sent), ``unreachable`` (no TCP connection),
    ``tls`` (handshake or verification failed), ``auth`` (credentials refused), ``http`` (an
    error status), ``protocol`` (an unexpected answer), ``corrupt`` (data does not match its
    digest), ``interrupted`` (stopped by a signal). status and code carry the HTTP status and
    the service's error code where there is one.
    """

    def __init__(self, message, kind="http", status=None, code=None):
        super(OnpremError, self).__init__(message)
        self.kind = kind
        self.status = status
        self.code = code

    @property
    def details(self):
        return dict(error_kind=self.kind, http_status=self.status, error_code=self.code)
