# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The root of the collection's errors: every helper's error subclasses OnpremError (BundleError,
CheckpointError, PackagesError, EndpointError, bundle_images' ImageError, model-pull's PullError), so code
that stops on "any of our errors" catches OnpremError. The network helpers (S3, MinIO admin, OCI
registry) raise OnpremError itself.

Python 3 standard library only: the model-pull image ships this file next to its script.

Private to this collection: the API may change without notice.
"""

from __future__ import annotations


class OnpremError(Exception):
    """A refusal or failure whose message names what went wrong and the fix.

    kind: ``input`` (bad parameters, nothing was sent), ``unreachable`` (no TCP connection),
    ``tls`` (handshake or verification failed), ``auth`` (credentials refused), ``http`` (an
    error status), ``protocol`` (an unexpected answer), ``corrupt`` (data does not match its
    digest), ``interrupted`` (stopped by a signal), ``refused`` (a helper refused what it was given or
    found: a bundle, a checkpoint, a package set; the default of the subclasses). status and code carry
    the HTTP status and the service's error code where there is one.

    ``details`` (keyword arguments for fail_json) defaults to the kind, status and code; a subclass
    may set its own.
    """

    KIND = "http"
    _details = None

    def __init__(self, message, kind=None, status=None, code=None):
        super(OnpremError, self).__init__(message)
        self.kind = self.KIND if kind is None else kind
        self.status = status
        self.code = code

    @property
    def details(self):
        if self._details is not None:
            return self._details
        return dict(error_kind=self.kind, http_status=self.status, error_code=self.code)

    @details.setter
    def details(self, value):
        self._details = value
