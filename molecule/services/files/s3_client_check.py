# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Molecule verify client: talk to an S3 endpoint with boto3 the way model-engine does.

Reads each key pair from a directory holding access-key and secret-key (the layout the minio
role exports), so no secret is on the command line or in the output. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys

import boto3
import botocore.config
import botocore.exceptions


def client(endpoint, key_dir, ca, region, secret_override=None):
    with open(os.path.join(key_dir, "access-key"), encoding="utf-8") as f:
        access_key = f.read().strip()
    with open(os.path.join(key_dir, "secret-key"), encoding="utf-8") as f:
        secret_key = f.read().strip()
    # Path-style addressing; checksums only where S3 requires them (rclone serve s3, like several
    # S3-compatible stores, refuses the aws-chunked uploads newer boto3 sends by default).
    config = botocore.config.Config(
        s3={"addressing_style": "path"}, retries={"max_attempts": 2},
        request_checksum_calculation="when_required", response_checksum_validation="when_required")
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name=region, verify=ca, config=config,
        aws_access_key_id=access_key, aws_secret_access_key=secret_override or secret_key)


def outcome(call, **kwargs):
    """('ok', the answer), or (the S3 error code / exception class, None)."""
    try:
        return "ok", call(**kwargs)
    except botocore.exceptions.ClientError as e:
        return e.response.get("Error", {}).get("Code") or "ClientError", None
    except (botocore.exceptions.BotoCoreError, OSError) as e:
        return type(e).__name__, None


def status(call, **kwargs):
    return outcome(call, **kwargs)[0]


def read_body(call, **kwargs):
    code, answer = outcome(call, **kwargs)
    return answer["Body"].read() if code == "ok" else None


def listed_keys(call, **kwargs):
    code, answer = outcome(call, **kwargs)
    return [o["Key"] for o in answer.get("Contents", [])] if code == "ok" else []


def full(a):
    rw = client(a.endpoint, a.readwrite_dir, a.ca, a.region)
    ro = client(a.endpoint, a.readonly_dir, a.ca, a.region)
    token = secrets.token_hex(16)
    body = ("llmops verify " + token).encode()
    job_key = "%s/llmops-verify/%s.txt" % (a.job_prefix, token)
    ckpt_key = "llmops-verify/%s.txt" % token
    me_bucket, ckpt_bucket = a.model_engine_bucket, a.checkpoints_bucket
    out = {}
    out["rw_put"] = status(rw.put_object, Bucket=me_bucket, Key=job_key, Body=body)
    out["rw_get_matches"] = read_body(rw.get_object, Bucket=me_bucket, Key=job_key) == body
    out["rw_list_has_key"] = job_key in listed_keys(rw.list_objects_v2, Bucket=me_bucket, Prefix=a.job_prefix + "/llmops-verify/")
    out["rw_put_checkpoint"] = status(rw.put_object, Bucket=ckpt_bucket, Key=ckpt_key, Body=body)
    out["ro_get_matches"] = read_body(ro.get_object, Bucket=ckpt_bucket, Key=ckpt_key) == body
    out["ro_list_has_key"] = ckpt_key in listed_keys(ro.list_objects_v2, Bucket=ckpt_bucket, Prefix="llmops-verify/")
    # Refused by real MinIO (the readonly policy); rclone serve s3 enforces no policy.
    out["ro_put"] = status(ro.put_object, Bucket=ckpt_bucket, Key=ckpt_key + ".ro", Body=body)
    out["ro_delete"] = status(ro.delete_object, Bucket=ckpt_bucket, Key=ckpt_key)
    out["rw_delete"] = status(rw.delete_object, Bucket=me_bucket, Key=job_key)
    wrong = client(a.endpoint, a.readwrite_dir, a.ca, a.region, secret_override="not-the-secret-" + token)
    out["wrong_secret"] = status(wrong.list_objects_v2, Bucket=me_bucket)
    untrusted = client(a.endpoint, a.readwrite_dir, True, a.region)
    out["system_trust_store"] = status(untrusted.list_objects_v2, Bucket=me_bucket)
    plain = client(a.endpoint.replace("https://", "http://"), a.readwrite_dir, a.ca, a.region)
    out["plain_http"] = status(plain.list_objects_v2, Bucket=me_bucket)
    if a.marker:
        out["marker_put"] = status(rw.put_object, Bucket=ckpt_bucket, Key="llmops-verify/marker", Body=a.marker.encode())
    return out


def read_marker(a):
    rw = client(a.endpoint, a.readwrite_dir, a.ca, a.region)
    code, answer = outcome(rw.get_object, Bucket=a.checkpoints_bucket, Key="llmops-verify/marker")
    return {"marker_get": code, "marker_matches": code == "ok" and answer["Body"].read() == a.marker.encode()}


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("mode", choices=["full", "read-marker"])
    p.add_argument("--endpoint", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--readwrite-dir", required=True)
    p.add_argument("--readonly-dir", required=True)
    p.add_argument("--model-engine-bucket", required=True)
    p.add_argument("--checkpoints-bucket", required=True)
    p.add_argument("--job-prefix", required=True)
    p.add_argument("--marker", default="")
    a = p.parse_args()
    json.dump(full(a) if a.mode == "full" else read_marker(a), sys.stdout, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
