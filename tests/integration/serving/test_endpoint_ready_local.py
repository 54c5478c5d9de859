"""endpoint_ready against the vLLM stand-in running as a local process on 127.0.0.1 (no cluster):
the HTTP steps, their timing, the API key, a start-up delay waited out, and what it says when the
endpoint is wrong."""
import json
import time

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.llmops.onprem.plugins.modules import endpoint_ready

KEY = "sk-local-key"


@pytest.fixture
def run_module(capsys):
    def run(args):
        with patch_module_args(args):
            with pytest.raises(SystemExit):
                endpoint_ready.main()
        out = capsys.readouterr().out
        return json.loads(out), out
    return run


def test_ready_with_key_reports_each_step(standin, checkpoint, run_module):
    s = standin([str(checkpoint), "--served-model-name", "tiny", "--api-key", KEY])
    s.wait_ready()
    result, out = run_module(dict(endpoints=[dict(name="tiny", url=s.url + "/", model="tiny", api_key=KEY)],
                                  timeout=30, interval=0.2, _ansible_check_mode=True))
    assert result["ready"] and not result["changed"] and not result.get("failed")
    ep = result["endpoints"][0]
    assert [st["step"] for st in ep["steps"]] == ["health", "models", "completion"]
    assert all(st["ok"] and st["seconds"] >= 0 for st in ep["steps"])
    assert ep["steps"][1]["detail"] == "/v1/models lists tiny"
    assert len(ep["completion"].split()) == 4 and ep["diagnosis"] is None and ep["url"] == s.url
    assert KEY not in out


def test_waits_out_the_startup_delay(standin, checkpoint, run_module):
    s = standin([str(checkpoint), "--served-model-name", "slow"],
                env={"STANDIN_LOAD_SECONDS": "2", "STANDIN_WARMUP_SECONDS": "1"})
    t0 = time.monotonic()
    result, _out = run_module(dict(endpoints=[dict(name="slow", url=s.url, model="slow")], timeout=60, interval=0.2))
    assert result["ready"], result
    health = result["endpoints"][0]["steps"][0]
    assert health["step"] == "health" and health["seconds"] >= 2.5  # load + warm-up were waited out
    assert time.monotonic() - t0 >= 3


def test_wrong_api_key_fails_at_once_with_the_fix(standin, checkpoint, run_module):
    s = standin([str(checkpoint), "--served-model-name", "tiny", "--api-key", KEY])
    s.wait_ready()
    t0 = time.monotonic()
    result, out = run_module(dict(endpoints=[dict(name="tiny", url=s.url, model="tiny", api_key="sk-wrong")],
                                  timeout=60, interval=0.2))
    assert time.monotonic() - t0 < 30  # fatal: not waited until the timeout
    assert result["failed"] and not result["ready"]
    d = result["endpoints"][0]["diagnosis"]
    assert d["code"] == "unauthorized"
    assert result["msg"] == ("1 of 1 endpoint(s) not ready. tiny: tiny (model tiny): %s answered 401 Unauthorized: "
                             "the API key given is not the engine's Fix: %s" % (s.url, d["fix"]))
    assert result["endpoints"][0]["steps"][-1] == dict(step="models", ok=False, seconds=result["endpoints"][0]["steps"][-1]["seconds"],
                                                       detail='/v1/models answered 401: {"error": "Unauthorized"}')
    assert "sk-wrong" not in out


def test_served_name_missing_times_out_with_detail(standin, checkpoint, run_module):
    s = standin([str(checkpoint), "--served-model-name", "tiny"])
    s.wait_ready()
    result, _out = run_module(dict(endpoints=[dict(name="other", url=s.url, model="other")], timeout=1, interval=0.2,
                                   fail_on_not_ready=False))
    assert not result.get("failed") and not result["ready"]
    ep = result["endpoints"][0]
    assert ep["diagnosis"]["code"] == "not_ready"
    assert ep["steps"][-1]["detail"] == "/v1/models lists ['tiny'], not the served name 'other'"


def test_many_endpoints_one_unreachable(standin, checkpoint, run_module):
    s = standin([str(checkpoint), "--served-model-name", "a"])
    s.wait_ready()
    result, _out = run_module(dict(endpoints=[dict(name="a", url=s.url, model="a"),
                                              dict(name="gone", url="http://127.0.0.1:9", model="b")],
                                   timeout=1, interval=0.2))
    assert result["failed"] and [e["ready"] for e in result["endpoints"]] == [True, False]
    assert "no answer from http://127.0.0.1:9/health" in result["endpoints"][1]["steps"][0]["detail"]
    assert result["msg"].startswith("1 of 2 endpoint(s) not ready. gone: gone (model b): not ready yet: no answer")


def test_bad_input_is_refused_before_any_request(run_module):
    result, _out = run_module(dict(endpoints=[dict(name="x", url="10.0.0.1:8000", model="m"),
                                              dict(name="x", url="http://h", model="m", selector="a=b")]))
    assert result["failed"] and result["endpoints"] == []
    assert result["msg"] == ("endpoints[x].url '10.0.0.1:8000' must start with http:// or https://; "
                             "endpoints[x].selector needs endpoints[x].namespace; endpoints[].name must be unique")


def _pki(tmp_path):
    """A site CA and a server certificate for 127.0.0.1 (what the pki stage makes, in small)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject, issuer, key, signer, ca, sans=None):
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
             .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)])).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return b.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = cert("test site CA", "test site CA", ca_key, ca_key, True)
    srv = cert("127.0.0.1", "test site CA", key, ca_key, False, [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    paths = dict(ca=tmp_path / "ca.crt", cert=tmp_path / "srv.crt", key=tmp_path / "srv.key")
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(srv.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    other = cert("other CA", "other CA", key, key, True)
    paths["other"] = tmp_path / "other.crt"
    paths["other"].write_bytes(other.public_bytes(serialization.Encoding.PEM))
    return paths


def test_speaks_tls_with_the_site_ca(standin, checkpoint, run_module, tmp_path):
    pki = _pki(tmp_path)
    s = standin([str(checkpoint), "--served-model-name", "tls", "--api-key", KEY,
                 "--ssl-certfile", str(pki["cert"]), "--ssl-keyfile", str(pki["key"])])
    s.wait_listening()
    url = s.url.replace("http://", "https://")
    result, _out = run_module(dict(endpoints=[dict(name="tls", url=url, model="tls", api_key=KEY, ca_file=str(pki["ca"]))],
                                   timeout=30, interval=0.2))
    assert result["ready"], result
    result, _out = run_module(dict(endpoints=[dict(name="tls", url=url, model="tls", api_key=KEY,
                                                   ca_file=str(pki["other"]))], timeout=1, interval=0.2))
    assert result["failed"]
    detail = result["endpoints"][0]["steps"][0]["detail"]
    assert detail.startswith("TLS to %s/health failed: [SSL: CERTIFICATE_VERIFY_FAILED]" % url)
    assert detail.endswith("(is ca_file the site CA?)")
