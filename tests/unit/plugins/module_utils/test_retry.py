"""module_utils/_retry.py: the one retry helper, and the OCI registry client that uses it (issue 13 item 3)."""
import errno
import http.client
import socket

import pytest

from ansible_collections.llmops.onprem.plugins.module_utils import _oci, _retry
from ansible_collections.llmops.onprem.plugins.module_utils._errors import OnpremError


class Sleeps(list):
    def __call__(self, s):
        self.append(s)


def test_delay_grows_exponentially_is_capped_and_jittered():
    assert [_retry.delay(a, rand=lambda: 0.5) for a in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert _retry.delay(0, rand=lambda: 0.0) == 0.25 and _retry.delay(0, rand=lambda: 1.0) == 0.75
    assert _retry.delay(10, rand=lambda: 1.0) == 12.0


@pytest.mark.parametrize("exc, refused, expected", [
    (ConnectionResetError(errno.ECONNRESET, "reset"), True, True),
    (http.client.RemoteDisconnected("closed"), True, True),
    (BrokenPipeError(errno.EPIPE, "pipe"), True, True),
    (socket.timeout("timed out"), True, True),
    (TimeoutError("timed out"), True, True),
    (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), True, True),
    (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), False, False),
    (socket.gaierror(-2, "Name or service not known"), True, False),
    (OSError(errno.ENOENT, "no such file"), True, False),
    (ValueError("bad"), True, False),
    (OnpremError("TLS verification failed", kind="tls"), True, False),
])
def test_only_transport_hiccups_are_transient(exc, refused, expected):
    assert _retry.transient_exception(exc, refused) is expected


def test_the_cause_of_a_wrapped_error_decides():
    try:
        try:
            raise ConnectionResetError(errno.ECONNRESET, "reset")
        except OSError as e:
            raise OnpremError("cannot talk to https://r: reset", kind="unreachable") from e
    except OnpremError as wrapped:
        assert _retry.transient_exception(wrapped)
    assert not _retry.transient_exception(OnpremError("cannot talk to https://r", kind="unreachable"))


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "get"])
def test_an_idempotent_request_is_retried_a_bounded_number_of_times(method):
    sleeps = Sleeps()
    r = _retry.Retry(method, attempts=3, sleep=sleeps, rand=lambda: 0.5)
    assert r.again(status=503) and r.again(exc=ConnectionResetError())
    assert not r.again(status=503), "a third retry after three tries"
    assert sleeps == [0.5, 1.0]


@pytest.mark.parametrize("method", ["POST", "PATCH", "post"])
def test_a_non_idempotent_request_is_never_retried(method):
    sleeps = Sleeps()
    r = _retry.Retry(method, attempts=5, sleep=sleeps)
    assert r.attempts == 1
    assert not r.again(status=503) and not r.again(exc=ConnectionResetError()) and sleeps == []


@pytest.mark.parametrize("status", [200, 201, 400, 401, 403, 404, 500, 501])
def test_other_statuses_are_answers_not_retried(status):
    assert not _retry.Retry("GET", attempts=3, sleep=pytest.fail).again(status=status)


def test_call_retries_transient_failures_then_gives_up_with_the_last_error():
    sleeps, tries = Sleeps(), []

    def flaky():
        tries.append(1)
        raise ConnectionResetError(errno.ECONNRESET, "reset %d" % len(tries))

    with pytest.raises(ConnectionResetError, match="reset 3"):
        _retry.call(flaky, "GET", attempts=3, sleep=sleeps, rand=lambda: 0.5)
    assert len(tries) == 3 and sleeps == [0.5, 1.0]
    tries[:] = []
    with pytest.raises(ValueError):
        _retry.call(lambda: (tries.append(1), int("x")), "GET", attempts=3, sleep=sleeps)
    assert len(tries) == 1
    assert _retry.call(lambda: 42, "POST") == 42


# ---- the OCI registry client: a POST is never retried; GET, HEAD and the PUT of a blob by digest are ---------

class Scripted(_oci.Registry):
    """A Registry whose transport plays a script: each entry is a status or an exception to raise."""

    def __init__(self, script):
        super(Scripted, self).__init__("registry.site:5000", retries=3)
        self.script, self.sent = list(script), []
        self._sleep = Sleeps()

    def _send(self, method, url, headers, body, limit=None):
        self.sent.append((method, url))
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            try:
                raise step
            except OSError as e:
                raise OnpremError("cannot talk to https://registry.site:5000: %s" % e, kind="unreachable") from e
        return step, {"location": "/v2/r/blobs/uploads/u1", "docker-content-digest": "sha256:" + "a" * 64}, b""


@pytest.mark.parametrize("first", [503, 429, ConnectionResetError(errno.ECONNRESET, "reset"), socket.timeout("timed out")])
def test_starting_an_upload_a_post_is_not_retried(first):
    reg = Scripted([first, 202])
    with pytest.raises(OnpremError):
        reg.start_upload("r")
    assert reg.sent == [("POST", "/v2/r/blobs/uploads/")] and reg._sleep == []


def test_a_mount_a_post_is_not_retried():
    reg = Scripted([502, 201])
    with pytest.raises(OnpremError, match="HTTP 502"):
        reg.mount("r", "sha256:" + "b" * 64, "other")
    assert [m for m, _u in reg.sent] == ["POST"]


def test_a_head_is_retried_after_a_reset_and_a_503():
    reg = Scripted([ConnectionResetError(errno.ECONNRESET, "reset"), 503, 200])
    assert reg.blob_exists("r", "sha256:" + "c" * 64)
    assert [m for m, _u in reg.sent] == ["HEAD"] * 3 and len(reg._sleep) == 2


def test_a_get_gives_up_after_the_bounded_tries():
    reg = Scripted([504, 504, 504, 200])
    with pytest.raises(OnpremError, match="HTTP 504"):
        reg.request("GET", "/v2/")
    assert len(reg.sent) == 3


def test_finishing_an_upload_the_put_of_a_blob_by_digest_is_retried():
    reg = Scripted([503, 201])
    reg.finish("/v2/r/blobs/uploads/u1", "sha256:" + "d" * 64)
    assert reg.sent == [("PUT", "/v2/r/blobs/uploads/u1?digest=sha256%3A" + "d" * 64)] * 2


def test_a_manifest_put_is_retried_and_an_error_status_is_not():
    reg = Scripted([502, 201])
    assert reg.put_manifest("r", "1", "application/vnd.oci.image.manifest.v1+json", b"{}") == "sha256:" + "a" * 64
    assert len(reg.sent) == 2
    reg = Scripted([500, 201])
    with pytest.raises(OnpremError, match="HTTP 500"):
        reg.put_manifest("r", "1", "application/vnd.oci.image.manifest.v1+json", b"{}")
    assert len(reg.sent) == 1


def test_a_name_that_does_not_resolve_is_not_retried():
    reg = Scripted([socket.gaierror(-2, "Name or service not known"), 200])
    with pytest.raises(OnpremError, match="Name or service not known"):
        reg.request("GET", "/v2/")
    assert len(reg.sent) == 1


def test_retry_false_sends_once():
    reg = Scripted([503, 200])
    with pytest.raises(OnpremError, match="HTTP 503"):
        reg.request("GET", "/v2/", retry=False)
    assert len(reg.sent) == 1


# ---- the S3 client: GET and HEAD retried, a refused connection and a POST not ----------------------------------

from ansible_collections.llmops.onprem.plugins.module_utils import _s3_endpoint  # noqa: E402


class ScriptedS3(_s3_endpoint.Endpoint):
    def __init__(self, script):
        self.sleeps = Sleeps()
        super(ScriptedS3, self).__init__("http://127.0.0.1:9000", "AKIA", "secret", retries=2, sleep=self.sleeps)
        self.script, self.sent = list(script), []

    def send(self, request):
        self.sent.append(request.method)
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            try:
                raise step
            except OSError as e:
                raise OnpremError("cannot connect to %s: %s" % (self.url, e), kind="unreachable") from e
        return step, {}, b""


def test_s3_get_is_retried_after_a_timeout_and_a_503():
    s3 = ScriptedS3([socket.timeout("timed out"), 503, 200])
    assert s3.call("GET", "/")[0] == 200 and s3.sent == ["GET"] * 3 and len(s3.sleeps) == 2


def test_s3_refused_connection_is_an_answer_not_retried():
    s3 = ScriptedS3([ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), 200])
    with pytest.raises(OnpremError, match="Connection refused"):
        s3.call("GET", "/")
    assert s3.sent == ["GET"]


def test_s3_post_is_not_retried_even_when_asked():
    s3 = ScriptedS3([503, 200])
    with pytest.raises(OnpremError, match="HTTP 503"):
        s3.call("POST", "/minio/admin/v3/add-user", retry=True)
    assert s3.sent == ["POST"] and s3.sleeps == []


def test_s3_get_is_retried_after_a_500_internal_error_as_s3_documents():
    s3 = ScriptedS3([500, 200])
    assert s3.call("GET", "/")[0] == 200 and s3.sent == ["GET", "GET"]


def test_s3_transient_statuses_are_the_registrys_plus_500():
    assert _retry.S3_TRANSIENT_STATUS == _retry.TRANSIENT_STATUS | {500} and 500 not in _retry.TRANSIENT_STATUS
