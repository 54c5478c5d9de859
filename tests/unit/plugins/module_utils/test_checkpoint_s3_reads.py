"""The plan's reads in _checkpoint_s3.Store (listing, open uploads, a small object) over the standard-library
client, with the network boundary (Endpoint.send) scripted: S3's answers as AWS documents them (ListObjectsV2,
ListMultipartUploads), page by page. Against a real store (rclone serve s3) they run in
tests/integration/checkpoints/test_checkpoint_sync.py."""
import http.server
import threading
from urllib.parse import parse_qsl

import pytest

from ansible_collections.llmops.onprem.plugins.module_utils import _checkpoint_s3, _s3_endpoint
from ansible_collections.llmops.onprem.plugins.module_utils._errors import OnpremError

NS = ' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


def page(keys, truncated=False, token=None, encoded=False, ns=NS):
    contents = "".join("<Contents><Key>%s</Key><Size>%d</Size></Contents>" % (k, s) for k, s in keys)
    return ("<ListBucketResult%s><Name>b</Name>%s<IsTruncated>%s</IsTruncated>%s%s</ListBucketResult>" % (
        ns, "<EncodingType>url</EncodingType>" if encoded else "", "true" if truncated else "false",
        "<NextContinuationToken>%s</NextContinuationToken>" % token if token else "", contents)).encode()


def uploads_page(uploads, truncated=False, markers=None):
    body = "".join("<Upload><Key>%s</Key><UploadId>%s</UploadId></Upload>" % u for u in uploads)
    nxt = "".join("<%s>%s</%s>" % (n, v, n) for n, v in (markers or {}).items())
    return ("<ListMultipartUploadsResult%s><Bucket>b</Bucket><IsTruncated>%s</IsTruncated>%s%s"
            "</ListMultipartUploadsResult>" % (NS, "true" if truncated else "false", nxt, body)).encode()


@pytest.fixture
def answers(monkeypatch):
    """Scripted (status, body) answers, in order; each request's (method, path, query) is recorded."""
    script, sent = [], []

    def send(endpoint, request, limit=None):
        sent.append((request.method, request.path, dict(parse_qsl(request.query_string, keep_blank_values=True))))
        status, body = script.pop(0)
        assert limit == _checkpoint_s3.SMALL_MAX  # every read is bounded
        return status, {}, body
    monkeypatch.setattr(_s3_endpoint.Endpoint, "send", send)
    return script, sent


def store(prefix="model/v1"):
    return _checkpoint_s3.Store("http://127.0.0.1:9", "AK", "SK", "us-east-1", None, 5, "b", prefix)


def test_a_listing_is_read_page_by_page_with_its_continuation_token(answers):
    script, sent = answers
    script += [(200, page([("model/v1/a.bin", 3)], truncated=True, token="t1/+=")),
               (200, page([("model/v1/sub/b.bin", 5)], ns=""))]  # a store that leaves out the namespace
    assert store().list() == {"a.bin": 3, "sub/b.bin": 5}
    assert [q for _m, _p, q in sent] == [
        {"list-type": "2", "prefix": "model/v1/", "encoding-type": "url"},
        {"list-type": "2", "prefix": "model/v1/", "encoding-type": "url", "continuation-token": "t1/+="}]
    assert all(p == "/b" and m == "GET" for m, p, _q in sent)


def test_url_encoded_keys_are_decoded_as_boto3_decodes_them(answers):
    script, _sent = answers
    script.append((200, page([("model/v1/a+b%2Bc.bin", 1), ("model/v1/%C3%BC.json", 2)], encoded=True)))
    assert store().list() == {"a b+c.bin": 1, "\u00fc.json": 2}


@pytest.mark.parametrize("body, words", [
    (page([("model/v1/a", 1)], truncated=True), "a truncated listing without a continuation token"),
    (b"<ListBucketResult><Contents><Key>model/v1/a</Key></Contents></ListBucketResult>", "an entry without a key or size"),
    (b"<html>not s3</html", "the answer is not S3's XML"),
])
def test_a_listing_that_cannot_be_followed_is_refused_with_its_reason(answers, words, body):
    script, _sent = answers
    script.append((200, body))
    with pytest.raises(OnpremError) as e:
        store().list()
    assert words in str(e.value) and "listing s3://b/model/v1/ on http://127.0.0.1:9" in str(e.value)
    assert e.value.kind == "protocol" and script == []


def test_an_answer_larger_than_any_listing_page_is_refused_unread():
    """A real HTTP server on loopback (no scripted send): the read stops one byte past the limit."""
    sent = []

    class Endless(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802  pylint: disable=invalid-name
            self.send_response(200)
            self.send_header("Content-Length", str(4 * _checkpoint_s3.SMALL_MAX))
            self.end_headers()
            block = b"x" * (1 << 20)
            try:
                for _i in range(4 * _checkpoint_s3.SMALL_MAX // len(block)):
                    self.wfile.write(block)
                    sent.append(len(block))
            except OSError:
                pass  # the client stopped reading and closed

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        s = _checkpoint_s3.Store("http://127.0.0.1:%d" % server.server_address[1], "AK", "SK", "us-east-1", None, 5,
                                 "b", "model/v1")
        with pytest.raises(OnpremError) as e:
            s.list()
    finally:
        server.shutdown()
        server.server_close()
    assert "answered more than %d bytes" % _checkpoint_s3.SMALL_MAX in str(e.value) and e.value.kind == "protocol"
    assert sum(sent) < 4 * _checkpoint_s3.SMALL_MAX


def test_refusals_are_named_as_before(answers):
    script, _sent = answers
    script += [(403, b"<Error><Code>SignatureDoesNotMatch</Code></Error>"),
               (404, b"<Error><Code>NoSuchBucket</Code></Error>")]
    with pytest.raises(OnpremError) as e:
        store().list()
    assert "refused the credential during listing s3://b/model/v1/ (SignatureDoesNotMatch)" in str(e.value)
    assert e.value.status == 403
    with pytest.raises(OnpremError) as e:
        store().list()
    assert "bucket b does not exist on http://127.0.0.1:9: create it first" in str(e.value)


def test_open_uploads_are_read_page_by_page_and_none_is_an_empty_list(answers):
    script, sent = answers
    script += [(200, uploads_page([("model/v1/a.bin", "u1")], truncated=True,
                                  markers={"NextKeyMarker": "model/v1/a.bin", "NextUploadIdMarker": "u1"})),
               (200, uploads_page([("model/v1/b.bin", "u2")])),
               (404, b"<Error><Code>NoSuchUpload</Code></Error>")]  # rclone serve s3's answer when none is open
    assert store().open_uploads() == [("model/v1/a.bin", "u1"), ("model/v1/b.bin", "u2")]
    assert sent[1][2] == {"uploads": "", "prefix": "model/v1/", "encoding-type": "url",
                          "key-marker": "model/v1/a.bin", "upload-id-marker": "u1"}
    assert store().open_uploads() == []


def test_a_small_object_is_its_bytes_or_none_when_gone(answers):
    script, sent = answers
    script += [(200, b'{"m": 1}'), (404, b"<Error><Code>NoSuchKey</Code></Error>")]
    s = store()
    assert s.get_bytes(".llmops/manifest.json") == b'{"m": 1}'
    assert s.get_bytes(".llmops/manifest.json") is None
    assert sent[0][:2] == ("GET", "/b/model/v1/.llmops/manifest.json")


def test_the_reads_create_no_boto3_client(answers):
    script, _sent = answers
    script += [(200, page([])), (404, b"<Error><Code>NoSuchUpload</Code></Error>"), (200, b"{}")]
    s = store()
    s.list()
    s.open_uploads()
    s.get_bytes("x")
    assert s._client is None  # pylint: disable=protected-access
