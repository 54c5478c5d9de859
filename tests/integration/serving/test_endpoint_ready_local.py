"""endpoint_ready against the REAL vLLM (the pinned CPU build, tests/integration/serving/real_engine.py)
running as a local process on 127.0.0.1 with a real tiny model and its LoRA adapter, TLS from a test
site CA and an API key (no cluster): every HTTP step and its timing from a cold start, the adapter,
a wrong key, a wrong CA, a wrong served name, an unreachable endpoint. One engine serves the whole
module (it takes 30-60 s and about 1.7 GB to start)."""
import json

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.llmops.onprem.plugins.modules import endpoint_ready

import real_engine

KEY = "sk-local-key"
HTTP_STEPS = ["health", "models", "completion", "chat", "sagemaker", "api_key"]


@pytest.fixture
def run_module(capsys):
    def run(args):
        with patch_module_args(args):
            with pytest.raises(SystemExit):
                endpoint_ready.main()
        out = capsys.readouterr().out
        return json.loads(out), out
    return run


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """The real engine, started (not waited for): https with the test site CA, an API key, a LoRA adapter."""
    tmp = tmp_path_factory.mktemp("real-engine")
    python = real_engine.vllm_python()
    model = real_engine.make_model(python, tmp / "tiny-llama", lora=tmp / "tiny-llama-lora")
    pki = _pki(tmp)
    e = real_engine.Engine(python, [
        "--model", str(model), "--served-model-name", "tiny", "--api-key", KEY,
        "--enforce-eager", "--kv-cache-memory-bytes", "64M", "--dtype", "float32",
        "--enable-lora", "--lora-modules", "tiny-lora=%s" % (tmp / "tiny-llama-lora"), "--max-lora-rank", "8",
        "--ssl-certfile", str(pki["cert"]), "--ssl-keyfile", str(pki["key"])], tmp, scheme="https",
        # One engine process (the uni executor): half the CPU of a start, and no worker busy-polling between the
        # test's requests (tests/integration/cluster/serving_helpers.ENGINE_ENV). test_real_engine.py runs the
        # chart's default layout.
        env={"VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
    e.pki = pki
    yield e
    e.stop()


def ep(engine, **kw):
    d = dict(name="tiny", url=engine.url, model="tiny", api_key=KEY, ca_file=str(engine.pki["ca"]))
    d.update(kw)
    return d


def test_waits_out_the_start_and_passes_every_step(engine, run_module):
    """First in the module: the engine is still starting, endpoint_ready waits it out (bounded)."""
    result, out = run_module(dict(endpoints=[ep(engine, url=engine.url + "/")], timeout=real_engine.HEALTH_TIMEOUT,
                                  interval=1.0, _ansible_check_mode=True))
    assert result["ready"] and not result["changed"] and not result.get("failed"), (result, engine.log()[-4000:])
    e = result["endpoints"][0]
    assert [st["step"] for st in e["steps"]] == HTTP_STEPS
    assert all(st["ok"] and st["seconds"] >= 0 for st in e["steps"])
    assert e["steps"][0]["seconds"] > 5  # the engine's start (model load, KV cache) was waited out
    assert e["steps"][1]["detail"] == "/v1/models lists tiny, tiny-lora"
    assert e["steps"][4]["detail"] == "/ping 200, /invocations answered a completion"
    assert e["steps"][5]["detail"] == "/v1/models without the key: 401"
    assert e["completion"] and e["diagnosis"] is None and e["url"] == engine.url
    assert e["version"] == real_engine.VERSION  # GET /version, once ready
    assert KEY not in out


def test_the_lora_adapter_answers(engine, run_module):
    engine.wait_healthy(context=_ssl(engine))
    result, _out = run_module(dict(endpoints=[ep(engine, name="lora", model="tiny-lora")], timeout=60, interval=1.0))
    assert result["ready"], result
    assert result["endpoints"][0]["steps"][1]["detail"] == "/v1/models lists tiny, tiny-lora"


def test_wrong_api_key_fails_at_once_with_the_fix(engine, run_module):
    engine.wait_healthy(context=_ssl(engine))
    result, out = run_module(dict(endpoints=[ep(engine, api_key="sk-wrong")], timeout=600, interval=1.0))
    assert result["failed"] and not result["ready"]
    e = result["endpoints"][0]
    assert e["seconds"] < 60  # fatal: not waited out until the timeout
    d = e["diagnosis"]
    assert d["code"] == "unauthorized" and d["fatal"]
    assert result["msg"] == ("1 of 1 endpoint(s) not ready. tiny: tiny (model tiny): %s answered 401 Unauthorized: "
                             "the API key given is not the engine's Fix: %s" % (engine.url, d["fix"]))
    assert e["steps"][-1]["step"] == "models" and e["steps"][-1]["detail"].startswith("/v1/models answered 401")
    assert "sk-wrong" not in out


def test_served_name_missing_times_out_with_detail(engine, run_module):
    engine.wait_healthy(context=_ssl(engine))
    result, _out = run_module(dict(endpoints=[ep(engine, name="other", model="other")], timeout=1, interval=0.2,
                                   fail_on_not_ready=False))
    assert not result.get("failed") and not result["ready"]
    e = result["endpoints"][0]
    assert e["diagnosis"]["code"] == "not_ready"
    assert e["steps"][-1]["detail"] == "/v1/models lists ['tiny', 'tiny-lora'], not the served name 'other'"


def test_many_endpoints_one_unreachable(engine, run_module):
    engine.wait_healthy(context=_ssl(engine))
    result, _out = run_module(dict(endpoints=[ep(engine, name="a"), dict(name="gone", url="http://127.0.0.1:9", model="b")],
                                   timeout=1, interval=0.2))
    assert result["failed"] and [e["ready"] for e in result["endpoints"]] == [True, False]
    assert "no answer from http://127.0.0.1:9/health" in result["endpoints"][1]["steps"][0]["detail"]
    assert result["msg"].startswith("1 of 2 endpoint(s) not ready. gone: gone (model b): not ready yet: no answer")


def test_tls_to_a_certificate_the_ca_did_not_sign_fails(engine, run_module):
    engine.wait_healthy(context=_ssl(engine))
    result, _out = run_module(dict(endpoints=[ep(engine, ca_file=str(engine.pki["other"]))], timeout=1, interval=0.2))
    assert result["failed"]
    detail = result["endpoints"][0]["steps"][0]["detail"]
    assert detail.startswith("TLS to %s/health failed: [SSL: CERTIFICATE_VERIFY_FAILED]" % engine.url)
    assert detail.endswith("(is ca_file the site CA?)")


def test_bad_input_is_refused_before_any_request(run_module):
    result, _out = run_module(dict(endpoints=[dict(name="x", url="10.0.0.1:8000", model="m"),
                                              dict(name="x", url="http://h", model="m", selector="a=b")]))
    assert result["failed"] and result["endpoints"] == []
    assert result["msg"] == ("endpoints[x].url '10.0.0.1:8000' must start with http:// or https://; "
                             "endpoints[x].selector needs endpoints[x].namespace; endpoints[].name must be unique")


def _ssl(engine):
    import ssl
    return ssl.create_default_context(cafile=str(engine.pki["ca"]))


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
