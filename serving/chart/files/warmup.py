# The serving chart's warm-up (values.yaml warmup), run by the engine container's startup probe:
#   python3 -c "$(this file)" PORT REQUESTS MAX_TOKENS PROMPT MODEL [LORA...]
# /health first (a loading engine fails fast, the probe retries), then REQUESTS completions at temperature 0 to
# each name, with VLLM_API_KEY when set. Exit 0 only when every one came back with a choice.
import json
import os
import sys
import urllib.error
import urllib.request

port, count, max_tokens, prompt, names = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5:]
base = "http://127.0.0.1:" + port
urllib.request.urlopen(base + "/health", timeout=5).read()
headers = {"Content-Type": "application/json"}
if os.environ.get("VLLM_API_KEY"):
    headers["Authorization"] = "Bearer " + os.environ["VLLM_API_KEY"]
for name in names:
    for i in range(count):
        body = json.dumps({"model": name, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}).encode()
        try:
            with urllib.request.urlopen(urllib.request.Request(base + "/v1/completions", body, headers), timeout=120) as r:
                answer = json.loads(r.read(1 << 20))
        except urllib.error.HTTPError as e:
            sys.exit("warm-up: %s answered HTTP %d: %s" % (name, e.code, e.read(2000).decode("utf-8", "replace")))
        if not answer.get("choices"):
            sys.exit("warm-up: %s answered no choices: %s" % (name, json.dumps(answer)[:2000]))
print("warm-up: %d completion(s) each from %s" % (count, ", ".join(names)))
