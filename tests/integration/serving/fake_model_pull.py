#!/usr/bin/env python
"""STAND-IN for the model-pull downloader in the serving chart's cluster tests (not the real one).

Takes model-pull's command line, and instead of reading the object store it decides by the
prefix, so each downloader outcome the readiness module must diagnose can be provoked:
  prefix containing "missing"  -> exit 4 (no manifest at the prefix), like model-pull
  prefix containing "denied"   -> exit 3 (credential refused), like model-pull
  otherwise                    -> writes <cache-root>/<model>/<digest>/: a copy of the real tiny
                                  model this image carries (/opt/fake-model-pull/model, written
                                  by tests/tools/make_model.py, LoRA adapter under lora/), with
                                  architectures SiteInHouseForCausalLM (which no vLLM supports)
                                  when the prefix contains "unsupported-arch"; prints
                                  MODEL_PATH=..., exit 0. An existing dir is kept (prints
                                  "0 bytes downloaded"). Without a model in the image it writes
                                  a config.json and a small weights file (no engine loads them).
"""
import argparse
import json
import os
import shutil
import sys

MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model")


def main():
    p = argparse.ArgumentParser(prog="model-pull")
    for flag in ("--endpoint", "--bucket", "--prefix", "--model", "--digest", "--cache-root"):
        p.add_argument(flag, required=True)
    p.add_argument("--ca-file")
    p.add_argument("--parallel", type=int, default=4)
    a = p.parse_args()
    print("fake model-pull (test stand-in): s3://%s/%s from %s" % (a.bucket, a.prefix, a.endpoint), flush=True)
    if "missing" in a.prefix:
        print("model-pull: no manifest at s3://%s/%s/.llmops/manifest.json: the prefix is empty or wrong"
              % (a.bucket, a.prefix), file=sys.stderr)
        return 4
    if "denied" in a.prefix:
        print("model-pull: the object store refused the credential %s: InvalidAccessKeyId"
              % os.environ.get("AWS_ACCESS_KEY_ID", "?"), file=sys.stderr)
        return 3
    path = os.path.join(a.cache_root, a.model, a.digest)
    if os.path.isfile(os.path.join(path, "config.json")):
        print("0 bytes downloaded: %s is complete" % path)
    else:
        if os.path.isdir(MODEL):
            shutil.copytree(MODEL, path, dirs_exist_ok=True)
            config = os.path.join(path, "config.json")
            with open(config) as fh:
                data = json.load(fh)
        else:
            os.makedirs(path, exist_ok=True)
            data = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "max_position_embeddings": 4096}
            with open(os.path.join(path, "model.safetensors"), "wb") as fh:
                fh.write(b"\0" * 4096)
        if "unsupported-arch" in a.prefix:
            data["architectures"] = ["SiteInHouseForCausalLM"]
        with open(os.path.join(path, "config.json"), "w") as fh:
            json.dump(data, fh)
        size = sum(os.path.getsize(os.path.join(r, f)) for r, _d, fs in os.walk(path) for f in fs)
        print("%d bytes downloaded" % size)
    print("MODEL_PATH=%s" % path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
