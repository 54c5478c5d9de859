#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: endpoint_ready
short_description: Wait until vLLM endpoints answer a real completion, and say why not
version_added: 0.1.0
description:
  - Waits for one or many OpenAI-compatible (vLLM) endpoints and reports, per endpoint, each readiness step
    with the seconds it took to pass - C(pods_scheduled) and C(init_done) (only when the endpoint names its
    O(endpoints[].namespace)), C(health) (C(GET /health) answers 200), C(models) (C(GET /v1/models) lists the
    served name), C(completion) (a real C(POST /v1/completions) at temperature 0 with a few tokens returns text),
    C(chat) (a C(POST /v1/chat/completions) at temperature 0 returns a message; skipped with O(endpoints[].chat=false)),
    C(sagemaker) (vLLM's SageMaker routes - C(GET /ping) answers 200 and C(POST /invocations) answers a completion),
    and C(api_key) (only with O(endpoints[].api_key) - a C(GET /v1/models) without the key must answer 401).
  - "Speaks the API key (C(Authorization: Bearer <key>)) and verifies TLS against the site CA. Warns when the API key
    would cross the network unencrypted (an C(http://) URL probed O(endpoints[].via=direct))."
  - Reads at most 1 MiB of any answer; a larger answer fails that check with a clear message (no endless body fills
    the controller's memory).
  - When an endpoint is not ready, diagnoses it from the cluster with the kubernetes Python client (pod phase,
    container states, init container exit codes, events, last log lines) and says what to do, for example an
    image missing from the site registry, too few free GPUs, an empty checkpoint prefix or a refused object-store
    credential (downloader exit codes 4 and 3), an architecture the vLLM release does not support, a wrong API key,
    an engine that answers without its API key, a checkpoint without a chat template.
    Such failures end the wait for that endpoint at once; others are waited out until O(timeout).
  - Changes nothing, so check mode runs the same checks.
extends_documentation_fragment:
  - llmops.onprem.attributes
  - ansible.builtin.action_common_attributes
attributes:
  diff_mode:
    support: none
options:
  endpoints:
    description: The endpoints to wait for, all at once.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Name of the endpoint in the result and in messages (for example the model key).
        type: str
        required: true
      url:
        description: Base URL of the engine, without C(/v1), for example C(http://10.0.0.7:8000) or C(https://chat.site.internal).
        type: str
        required: true
      model:
        description: The served model name (vLLM C(--served-model-name)) that C(/v1/models) must list and the completion uses.
        type: str
        required: true
      namespace:
        description: Namespace of the serving pods. When set, the pod steps run and failures are diagnosed from the cluster.
        type: str
      selector:
        description: Label selector of the endpoint's pods, for example C(llmops.onprem/model=chat,app.kubernetes.io/instance=llmops-serving).
        type: str
      api_key:
        description: API key the engine requires. Never logged or returned.
        type: str
      ca_file:
        description: CA bundle that signs the endpoint's certificate (the site CA) for C(https) URLs.
        type: path
      validate_certs:
        description: Verify the endpoint's TLS certificate.
        type: bool
        default: true
      via:
        description:
          - How the checks reach the engine.
          - C(direct) - the controller connects to O(endpoints[].url) itself (a ClusterIP works only from a controller
            inside the cluster's network; an ingress URL from anywhere that resolves it).
          - C(portforward) - through a port-forward (the API server's C(pods/portforward), inside the kubeconfig's TLS)
            to the URL's port on a live, preferably Ready, pod of O(endpoints[].selector); works from a controller
            outside the cluster and keeps the API key off the network. Needs O(endpoints[].namespace) and
            O(endpoints[].selector). The URL's host only names the engine (C(Host) header, TLS server name).
          - C(proxy) - through the API server's service proxy to O(endpoints[].service) on the URL's port. The API
            server drops the C(Authorization) header, so an engine that requires an API key answers 401 this way
            (diagnosed as C(unauthorized)); for engines without a key. Needs O(endpoints[].namespace) and
            O(endpoints[].service).
          - The vllm_serving role probes C(portforward) by default (C(vllm_serving_probe_via)).
        type: str
        choices: [direct, portforward, proxy]
        default: direct
      service:
        description: Name of the endpoint's Service, for O(endpoints[].via=proxy).
        type: str
      chat:
        description:
          - Check a chat completion too. Set C(false) for a base model whose tokenizer has no chat template (it
            serves completions only); with C(true) such a model is diagnosed as C(chat_template_missing).
        type: bool
        default: true
  timeout:
    description: Seconds to wait for all endpoints together.
    type: int
    default: 900
  interval:
    description: Seconds between rounds of checks.
    type: float
    default: 2.0
  progress_file:
    description:
      - While an endpoint waits for its init containers, the model pulls running in its pods (read from the
        C(model-pull) init container's progress lines in its log, each round) are kept in this file, all endpoints
        together, in the collection's one progress format (C(docs/progress.md)); the P(llmops.onprem.progress#callback)
        callback shows it live. Its sizes are as precise as the log line prints them (0.1 of the unit).
      - Nothing is written when no pull was seen (a node cache that already held the checkpoint, a pull shorter than
        a round, endpoints without O(endpoints[].namespace)).
    type: path
  prompt:
    description: Prompt of the test completion.
    type: str
    default: Say hello.
  max_tokens:
    description: Tokens the test completion asks for.
    type: int
    default: 4
  kubeconfig:
    description: Kubeconfig for the pod steps and diagnoses. Default the client's (C(KUBECONFIG), C(~/.kube/config)).
    type: path
  context:
    description: Kubeconfig context.
    type: str
  fail_on_not_ready:
    description: Fail when an endpoint is not ready. With C(false) the result still says which and why.
    type: bool
    default: true
requirements:
  - kubernetes (Python) when an endpoint names its namespace
author:
  - llmops.onprem maintainers (@llmops-onprem)
"""

EXAMPLES = r"""
- name: Wait for the chat model and record each step's time
  llmops.onprem.endpoint_ready:
    endpoints:
      - name: chat
        url: http://10.96.0.20:8000
        model: Llama-3-8B-Instruct
        namespace: llmops
        selector: app.kubernetes.io/instance=llmops-serving,llmops.onprem/model=chat
        via: portforward   # through the API server: works from a controller outside the cluster
        api_key: "{{ serving_api_key }}"
      - name: point
        url: https://point.site.internal
        model: Point
        ca_file: /etc/llmops/pki/site-ca.crt
        api_key: "{{ serving_api_key }}"
    timeout: 1800
    kubeconfig: /etc/llmops/admin.kubeconfig
  delegate_to: localhost
  register: serving_ready

- name: Show how long each step took
  ansible.builtin.debug:
    msg: "{{ item.name }}: {{ item.steps | map(attribute='step') | zip(item.steps | map(attribute='seconds')) | list }}"
  loop: "{{ serving_ready.endpoints }}"
  loop_control:
    label: "{{ item.name }}"
"""

RETURN = r"""
ready:
  description: True when every endpoint passed every step.
  returned: always
  type: bool
  sample: true
endpoints:
  description: One entry per endpoint, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The endpoint's name.
      type: str
      sample: chat
    url:
      description: The base URL checked.
      type: str
      sample: http://10.96.0.20:8000
    model:
      description: The served model name.
      type: str
      sample: Llama-3-8B-Instruct
    ready:
      description: Whether all steps passed.
      type: bool
      sample: true
    seconds:
      description: Seconds from the start of the wait until the endpoint was ready (or the wait ended).
      type: float
      sample: 41.2
    steps:
      description: >-
        The steps passed, in order, each with the seconds it took after the previous one (C(ok) true), and for a
        not-ready endpoint the step it stopped at (C(ok) false).
      type: list
      elements: dict
      sample: [{"step": "health", "ok": true, "seconds": 38.1, "detail": "/health 200"}]
    completion:
      description: Text of the test completion (empty when not reached).
      type: str
      sample: " the model answers"
    version:
      description: The engine's version from C(GET /version) once ready (vLLM answers it), else empty.
      type: str
      sample: "0.32.0"
    diagnosis:
      description: >-
        Null when ready. Otherwise C(code) (C(image_pull), C(insufficient_gpu), C(unschedulable), C(checkpoint_missing),
        C(credential_refused), C(checkpoint_corrupt), C(cache_full), C(object_store_unreachable), C(downloader_usage),
        C(init_failed), C(unsupported_architecture), C(engine_failed), C(unauthorized), C(api_key_not_enforced),
        C(chat_template_missing), C(no_pods), C(waiting_for_old_pod), C(not_ready),
        C(cluster_unreadable)), C(message), C(fix), C(fatal), C(container) (the container the verdict is about, when
        there is one) and C(evidence) (pods and container states, events,
        last log lines; for C(not_ready) the events and every container's log tail of the first live pod that is
        not Ready). Pods on their way out (being deleted, or finished) are not the endpoint's - the pod steps and the
        diagnosis look only at the live ones - and are listed in C(evidence.leaving). A fatal verdict whose container
        log could not be read (the kubelet was replacing the container) waits up to three more rounds for that log.
      type: dict
      sample: {"code": "checkpoint_missing", "message": "...", "fix": "...", "fatal": true, "evidence": {}}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmops.onprem.plugins.module_utils._endpoint import Cluster, EndpointError, wait


def argument_spec():
    return dict(
        endpoints=dict(type="list", elements="dict", required=True, options=dict(
            name=dict(type="str", required=True),
            url=dict(type="str", required=True),
            model=dict(type="str", required=True),
            namespace=dict(type="str"),
            selector=dict(type="str"),
            api_key=dict(type="str", no_log=True),
            ca_file=dict(type="path"),
            validate_certs=dict(type="bool", default=True),
            via=dict(type="str", default="direct", choices=["direct", "portforward", "proxy"]),
            service=dict(type="str"),
            chat=dict(type="bool", default=True),
        )),
        timeout=dict(type="int", default=900),
        interval=dict(type="float", default=2.0),
        prompt=dict(type="str", default="Say hello."),
        max_tokens=dict(type="int", default=4, no_log=False),
        kubeconfig=dict(type="path"),
        context=dict(type="str"),
        fail_on_not_ready=dict(type="bool", default=True),
        progress_file=dict(type="path"),
    )


def run(p, cluster_factory):
    problems = []
    for ep in p["endpoints"]:
        ep["url"] = ep["url"].rstrip("/")
        if not ep["url"].startswith(("http://", "https://")):
            problems.append("endpoints[%s].url %r must start with http:// or https://" % (ep["name"], ep["url"]))
        if ep.get("selector") and not ep.get("namespace"):
            problems.append("endpoints[%s].selector needs endpoints[%s].namespace" % (ep["name"], ep["name"]))
        if ep["via"] == "portforward" and not (ep.get("namespace") and ep.get("selector")):
            problems.append("endpoints[%s].via portforward needs endpoints[%s].namespace and .selector (the pods to "
                            "forward to)" % (ep["name"], ep["name"]))
        if ep["via"] == "proxy" and not (ep.get("namespace") and ep.get("service")):
            problems.append("endpoints[%s].via proxy needs endpoints[%s].namespace and .service (the Service to proxy "
                            "to)" % (ep["name"], ep["name"]))
    if len({ep["name"] for ep in p["endpoints"]}) != len(p["endpoints"]):
        problems.append("endpoints[].name must be unique")
    if p["timeout"] < 0 or p["max_tokens"] < 1:
        problems.append("timeout must be 0 or more and max_tokens at least 1")
    if problems:
        raise EndpointError("; ".join(problems))
    results = wait(p["endpoints"], cluster_factory, timeout=p["timeout"], interval=p["interval"],
                   prompt=p["prompt"], max_tokens=p["max_tokens"], progress_file=p.get("progress_file"))
    return dict(changed=False, ready=all(r["ready"] for r in results), endpoints=results)


def warnings(p):
    """The endpoints whose API key would cross the network in clear text."""
    return ["endpoints[%s]: the API key goes to %s unencrypted (http:// probed via direct): anyone on that network "
            "path can read it. Probe via portforward (inside the API server's TLS), or give an https:// URL with the "
            "site CA." % (ep["name"], ep["url"].rstrip("/"))
            for ep in p["endpoints"] if ep.get("api_key") and ep["via"] == "direct" and ep["url"].startswith("http://")]


def failure_message(result):
    lines = []
    for r in result["endpoints"]:
        if not r["ready"]:
            d = r["diagnosis"] or {}
            lines.append("%s: %s Fix: %s" % (r["name"], d.get("message", "not ready"), d.get("fix", "")))
    return "%d of %d endpoint(s) not ready. %s" % (len(lines), len(result["endpoints"]), " ".join(lines))


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    p = module.params
    for w in warnings(p):
        module.warn(w)
    try:
        result = run(p, lambda: Cluster(p["kubeconfig"], p["context"]))
        if not result["ready"] and p["fail_on_not_ready"]:
            raise EndpointError(failure_message(result), details=result)
    except EndpointError as e:
        module.fail_json(msg=str(e), **e.details)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
