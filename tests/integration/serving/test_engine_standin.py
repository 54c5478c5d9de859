"""The vLLM stand-in as a local process: vLLM's command line, checkpoint checks, start-up
phases, the HTTP contract, the API key, and drain on SIGTERM."""
import signal
import threading
import time

from standin import make_checkpoint

KEY = "sk-test-key"


def test_serves_vllm_contract_after_load_and_warmup(standin, checkpoint):
    s = standin([str(checkpoint), "--served-model-name", "tiny", "--tensor-parallel-size", "2",
                 "--max-model-len", "2048", "--enable-prefix-caching", "--block-size", "16"],
                env={"STANDIN_LOAD_SECONDS": "1.0", "STANDIN_WARMUP_SECONDS": "0.5"})
    s.wait_listening()
    t0 = time.monotonic()
    code, state = s.get("/health")
    assert (code, state) == (503, "loading")
    assert s.get("/ping")[0] == 503
    s.wait_ready()
    assert time.monotonic() - t0 >= 1.2  # load + warm-up before ready
    assert s.get("/health") == (200, "")
    assert s.post("/ping", {})[0] == 200
    assert s.get("/version") == (200, {"version": "0.32.0", "standin": True})
    code, models = s.get("/v1/models")
    assert code == 200 and [m["id"] for m in models["data"]] == ["tiny"]
    assert models["data"][0]["max_model_len"] == 2048 and models["data"][0]["root"] == str(checkpoint)
    body = {"model": "tiny", "prompt": "Hello", "max_tokens": 5, "temperature": 0}
    code, first = s.post("/v1/completions", body)
    assert code == 200 and first["object"] == "text_completion"
    assert len(first["choices"][0]["text"].split()) == 5 and first["usage"]["completion_tokens"] == 5
    assert s.post("/v1/completions", body)[1]["choices"][0]["text"] == first["choices"][0]["text"]
    code, chat = s.post("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                                                 "max_tokens": 3, "temperature": 0})
    assert code == 200 and chat["choices"][0]["message"]["role"] == "assistant"
    assert len(chat["choices"][0]["message"]["content"].split()) == 3
    code, inv = s.post("/invocations", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                                        "max_tokens": 3, "temperature": 0})
    assert code == 200 and inv["choices"][0]["message"]["content"] == chat["choices"][0]["message"]["content"]
    code, metrics = s.get("/metrics")
    assert code == 200 and 'vllm:num_requests_running{model_name="tiny"} 0' in metrics
    assert 'vllm:request_success_total{finished_reason="length",model_name="tiny"} 4' in metrics
    assert "engine flags accepted and ignored by the stand-in: --block-size" in s.log()


def test_module_command_line_and_unknown_model(standin, checkpoint):
    s = standin(["--model", str(checkpoint), "--served-model-name", "m1"], module_form=True)
    s.wait_ready()
    code, err = s.post("/v1/completions", {"model": "other", "prompt": "x", "max_tokens": 1})
    assert code == 404 and err["message"] == "The model `other` does not exist." and err["type"] == "NotFoundError"
    code, err = s.post("/v1/completions", {"model": "m1", "prompt": "x", "max_tokens": 5000})
    assert code == 400 and err["message"].startswith("This model's maximum context length is 4096 tokens.")


def test_api_key_guards_v1_only(standin, checkpoint):
    s = standin([str(checkpoint), "--served-model-name", "m", "--api-key", KEY])
    s.wait_ready()
    assert s.get("/v1/models") == (401, {"error": "Unauthorized"})
    assert s.get("/v1/models", key="wrong") == (401, {"error": "Unauthorized"})
    assert s.get("/v1/models", key=KEY)[0] == 200
    assert s.get("/health")[0] == 200 and s.get("/metrics")[0] == 200


def test_api_key_from_environment(standin, checkpoint):
    s = standin([str(checkpoint)], env={"VLLM_API_KEY": KEY})
    s.wait_ready()
    assert s.post("/v1/completions", {"prompt": "x", "max_tokens": 1})[0] == 401
    code, out = s.post("/v1/completions", {"prompt": "x", "max_tokens": 1}, key=KEY)
    assert code == 200 and out["model"] == str(checkpoint)


def test_unsupported_architecture_exits_with_vllm_message(standin, tmp_path):
    ckpt = make_checkpoint(tmp_path / "in-house", architectures=("SiteInHouseForCausalLM",))
    s = standin([str(ckpt)])
    assert s.proc.wait(30) == 1
    assert ("ValueError: Model architectures ['SiteInHouseForCausalLM'] are not supported for now. "
            "Supported architectures: dict_keys([") in s.log()
    assert "'LlamaForCausalLM'" in s.log()


def test_missing_and_broken_config(standin, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    s = standin([str(empty)])
    assert s.proc.wait(30) == 1
    assert "OSError: %s does not appear to have a file named config.json" % empty in s.log()
    broken = make_checkpoint(tmp_path / "broken", config="{not json")
    s = standin([str(broken)])
    assert s.proc.wait(30) == 1
    assert "It looks like the config file at '%s/config.json' is not a valid JSON file" % broken in s.log()
    s = standin([str(tmp_path / "nowhere")])
    assert s.proc.wait(30) == 1
    assert "is not a local folder and the Hugging Face Hub is offline" in s.log()


def test_flag_validation(standin, checkpoint):
    s = standin([str(checkpoint), "--not-a-vllm-flag", "1"])
    assert s.proc.wait(30) == 2
    assert "vllm: error: unrecognized arguments: --not-a-vllm-flag" in s.log()
    s = standin([str(checkpoint), "--tensor-parallel-size", "zero"])
    assert s.proc.wait(30) == 2
    assert "argument --tensor-parallel-size/-tp: invalid int value: 'zero'" in s.log()
    s = standin([str(checkpoint), "--gpu-memory-utilization", "1.5"])
    assert s.proc.wait(30) == 2
    assert "argument --gpu-memory-utilization: must be in (0, 1], got 1.5" in s.log()
    s = standin([str(checkpoint), "--max-model-len", "8192"])
    assert s.proc.wait(30) == 1
    assert "User-specified max_model_len (8192) is greater than the derived max_model_len" in s.log()


def test_fail_at_start_switch(standin, checkpoint):
    s = standin([str(checkpoint)], env={"STANDIN_FAIL_AT_START": "CUDA out of memory (stand-in switch)"})
    assert s.proc.wait(30) == 1
    assert "ERROR" in s.log() and "CUDA out of memory (stand-in switch)" in s.log()


def test_sigterm_drains_in_flight_request_and_refuses_new_ones(standin, checkpoint):
    s = standin([str(checkpoint), "--served-model-name", "m"],
                env={"STANDIN_DELAY_PER_TOKEN": "0.1", "STANDIN_DRAIN_SECONDS": "10"})
    s.wait_ready()
    result = {}
    t = threading.Thread(target=lambda: result.update(r=s.post("/v1/completions",
                                                               {"model": "m", "prompt": "long", "max_tokens": 20})))
    t.start()
    time.sleep(0.5)  # the request is in flight (2 s of tokens)
    s.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert s.get("/health") == (503, "draining")
    code, err = s.post("/v1/completions", {"model": "m", "prompt": "new", "max_tokens": 1})
    assert code == 503 and err["type"] == "ServiceUnavailableError"
    t.join(30)
    code, out = result["r"]
    assert code == 200 and len(out["choices"][0]["text"].split()) == 20
    assert s.proc.wait(30) == 0
    assert "Drain complete" in s.log()


def test_sigterm_drain_budget_exhausted_exits_nonzero(standin, checkpoint):
    s = standin([str(checkpoint)], env={"STANDIN_DELAY_PER_TOKEN": "0.5", "STANDIN_DRAIN_SECONDS": "0.5"})
    s.wait_ready()

    def long_request():
        try:
            s.post("/v1/completions", {"prompt": "long", "max_tokens": 20})
        except OSError:
            pass  # the stand-in exits before answering: that is the point

    threading.Thread(target=long_request, daemon=True).start()
    time.sleep(0.3)
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(30) == 1
    assert "Drain budget exhausted" in s.log() and "(1 requests still running)" in s.log()


def test_accepts_the_vllm_032_flags_the_chart_renders_and_refuses_removed_ones(standin, checkpoint):
    s = standin([str(checkpoint), "--served-model-name", "m", "--kv-cache-memory-bytes", "64M", "--shutdown-timeout", "7",
                 "--enable-log-requests", "--max-num-seqs", "4"])
    s.wait_ready()
    assert s.get("/health") == (200, "")
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(30) == 0
    assert "in-flight ones get 7.0s" in s.log() and '"GET /health HTTP/1.1" 200' in s.log()
    old = standin([str(checkpoint), "--disable-log-requests"])
    assert old.proc.wait(30) == 2
    assert "unrecognized arguments: --disable-log-requests" in old.log()
