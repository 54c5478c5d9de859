# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to llmops.onprem; may change without notice.

Readiness of vLLM endpoints (the endpoint_ready module): the ordered steps a served model
passes (pods scheduled, init containers done, /health 200, /v1/models lists the served name,
a real completion and a chat answer return text at temperature 0, vLLM's SageMaker routes /ping
and /invocations answer, and a request without the API key is refused), each timed, and when a step does not pass, a diagnosis from
the cluster (pod phase, container states, init exit codes, events, last log lines) with what
to do about it. HTTP is the standard library (urllib, ssl with the site CA); the Kubernetes
side is the `kubernetes` client, imported only when an endpoint names its namespace.

The diagnosis is a pure function of plain dicts (pods, events, logs as the API returns them),
so it is unit tested without a cluster.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error

from ansible.module_utils.urls import SSLValidationError, open_url

from ansible_collections.llmops.onprem.plugins.module_utils import _progress
from ansible_collections.llmops.onprem.plugins.module_utils._errors import OnpremError

STEPS = ("pods_scheduled", "init_done", "health", "models", "completion", "chat", "sagemaker", "api_key")
HTTP_STEPS = ("health", "models", "completion", "chat", "sagemaker", "api_key")

# model-pull's exit codes (serving/model-pull): what each means and what to do.
DOWNLOADER_EXITS = {
    2: ("downloader_usage", "the downloader was started with bad arguments",
        "Check the chart's downloader values (objectStore.endpoint, bucket, checkpoint prefix and digest)."),
    3: ("credential_refused", "the object store refused the downloader's read-only credential",
        "The read-only credential in the object-store Secret does not match the object store: re-run the minio "
        "(or external object store) and cluster_secrets stages so the Secret holds a valid read-only key."),
    4: ("checkpoint_missing", "the checkpoint prefix is empty or wrong: no .llmops/manifest.json under it",
        "Check the model's checkpoint bucket/prefix against what the checkpoints stage uploaded "
        "(<prefix>/.llmops/manifest.json must exist), or run the checkpoints stage first."),
    5: ("checkpoint_corrupt", "the downloaded checkpoint failed verification against its manifest (sha256, size, "
                              "path, or a link in the node cache)",
        "If the log names a link in the node cache, remove it. Otherwise the object store holds different bytes than the "
        "manifest: re-run the checkpoints stage with checkpoints_read_back: true, which reads every object back and "
        "re-uploads the ones that differ."),
    6: ("cache_full", "the node's model cache has no space for the checkpoint",
        "Free space in the node cache (cache.hostPath or its PVC), or make it larger."),
    7: ("object_store_unreachable", "the downloader cannot reach the object store (network or TLS)",
        "Check objectStore.endpoint and that the site CA (objectStore.caName) signs the object store's certificate."),
    # Not fatal: Kubernetes restarts the init container, which succeeds once the other pull lets go.
    8: ("cache_lock_timeout", "another model-pull of the same model on this node held the node-cache lock "
                              "(<cache>/<model>/.lock) longer than --lock-timeout",
        "The log names the lock file and its holder (pod or host, pid): find the pod on this node whose model-pull "
        "init container has been running the longest and delete it if it is stuck; a pull that legitimately takes "
        "longer needs a larger --lock-timeout.", False),
}
UNSUPPORTED_ARCH = "are not supported for now. supported architectures"
KUBELET_NO_LOG = "unable to retrieve container logs"
# A fatal diagnosis whose failing container's log could not be read (the kubelet was replacing it) waits
# this many more rounds for the log before it stands without it: the log is what names the cause.
UNREAD_LOG_ROUNDS = 3
PULL_REASONS = ("ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName")


class EndpointError(OnpremError):
    """A failed HTTP step: ``status`` (None when no answer), ``body`` (text, shortened)."""

    def __init__(self, message, status=None, body="", details=None, kind=None):
        super(EndpointError, self).__init__(message)
        self.status = status
        self.body = body
        self.kind = kind  # a failure the step itself recognises (for example "api_key_not_enforced")
        self.details = details if details is not None else dict(changed=False, ready=False, endpoints=[])


MAX_BODY = 1 << 20  # bytes of an answer read at most: /health, /v1/models and a short completion are a few KiB
VIA = ("direct", "portforward", "proxy")


def tls_options(ca_file=None, validate_certs=True):
    """open_url's TLS keyword arguments for an endpoint."""
    return dict(ca_path=ca_file or None, validate_certs=validate_certs)


def read_bounded(response, url, limit=MAX_BODY):
    """At most limit bytes of an answer's body; EndpointError (nothing more read) when it holds more."""
    raw = response.read(limit + 1)
    if len(raw) > limit:
        raise EndpointError("the answer from %s is larger than %d bytes (%d MiB): refused without reading the rest. "
                            "An engine's /health, /v1/models and a short completion are a few KiB: check that the URL "
                            "is the vLLM engine's, not another service." % (url, limit, limit >> 20))
    return raw


class Direct(object):
    """HTTP from the controller to the URL itself (open_url: no proxy, no redirects, the site CA)."""

    name = "direct"

    def __init__(self, tls=None):
        self.tls = tls or {}

    def request(self, url, method, data, headers, timeout):
        try:
            r = open_url(url, data=data, headers=headers, method=method, timeout=timeout, use_proxy=False,
                         follow_redirects="none", http_agent="llmops-endpoint-ready", **self.tls)
            return r.status, read_bounded(r, url)
        except urllib.error.HTTPError as e:
            return e.code, read_bounded(e, url)
        except SSLValidationError as e:
            raise EndpointError("TLS to %s failed: %s (is ca_file the site CA?)" % (url, e))
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, ssl.SSLError):
                raise EndpointError("TLS to %s failed: %s (is ca_file the site CA?)" % (url, reason))
            raise EndpointError("no answer from %s: %s" % (url, reason))
        except (OSError, ValueError) as e:
            if isinstance(e, ssl.SSLError):
                raise EndpointError("TLS to %s failed: %s (is ca_file the site CA?)" % (url, e))
            raise EndpointError("no answer from %s: %s" % (url, e))


class PortForward(object):
    """HTTP through a port-forward (the API server's pods/portforward, over the kubeconfig's TLS) to the
    URL's port on a live, preferably Ready, pod of the endpoint's selector: works from a controller
    outside the cluster, and the engine sees the API key (the request reaches it unchanged)."""

    name = "portforward"

    def __init__(self, cluster, namespace, selector, tls=None):
        self.cluster, self.namespace, self.selector = cluster, namespace, selector
        self.tls = tls or {}

    def request(self, url, method, data, headers, timeout):
        import http.client
        from urllib.parse import urlsplit

        u = urlsplit(url)
        port = u.port or (443 if u.scheme == "https" else 80)
        pods = live_pods(self.cluster.pods(self.namespace, self.selector))
        running = [p for p in pods if _engine_running(p)]
        pod = next((p for p in running if _is_ready(p)), running[0] if running else None)
        if pod is None:
            raise EndpointError("no answer via port-forward: no live pod of %r runs its engine yet" % self.selector)
        name = pod["metadata"]["name"]
        where = "%s (port-forward to pod %s port %d)" % (url, name, port)
        try:
            pf = self.cluster.portforward(self.namespace, name, port)
        except Exception as e:  # pylint: disable=broad-except  # ApiException, websocket errors
            raise EndpointError("no answer from %s: %s" % (where, _short(str(e), 300)))
        sock = pf.socket(port)
        try:
            raw_sock = getattr(sock, "_socket", sock)
            raw_sock.settimeout(timeout)
            if u.scheme == "https":
                ctx = ssl.create_default_context(cafile=self.tls.get("ca_path"))
                if not self.tls.get("validate_certs", True):
                    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
                raw_sock = ctx.wrap_socket(raw_sock, server_hostname=u.hostname)
            conn = http.client.HTTPConnection(u.hostname, port, timeout=timeout)
            conn.sock = raw_sock
            conn.request(method, (u.path or "/") + ("?" + u.query if u.query else ""), body=data,
                         headers=dict(headers, Connection="close", **{"User-Agent": "llmops-endpoint-ready"}))
            r = conn.getresponse()
            return r.status, read_bounded(r, where)
        except ssl.SSLError as e:
            raise EndpointError("TLS to %s failed: %s (is ca_file the site CA?)" % (where, e))
        except (OSError, http.client.HTTPException) as e:
            raise EndpointError("no answer from %s: %s%s" % (where, e.__class__.__name__, ": %s" % e if str(e) else ""))
        finally:
            try:
                raw_sock.close()
            finally:
                pf.close()


class Proxy(object):
    """HTTP through the API server's service proxy (/api/v1/namespaces/NS/services/SCHEME:NAME:PORT/proxy/...).
    The API server consumes the Authorization header (the request carries the kubeconfig's credential), so an
    engine that requires an API key answers 401 this way: use it for engines without a key."""

    name = "proxy"

    def __init__(self, cluster, namespace, service):
        self.cluster, self.namespace, self.service = cluster, namespace, service

    def request(self, url, method, data, headers, timeout):
        from urllib.parse import urlsplit

        u = urlsplit(url)
        port = u.port or (443 if u.scheme == "https" else 80)
        path = "/api/v1/namespaces/%s/services/%s:%s:%d/proxy%s" % (self.namespace, u.scheme, self.service, port, u.path or "/")
        where = "%s (API server service proxy %s)" % (url, path)
        try:
            r = self.cluster.raw_request(method, path, data, headers, timeout)
        except Exception as e:  # pylint: disable=broad-except  # urllib3 errors, TLS to the API server
            raise EndpointError("no answer from %s: %s" % (where, _short(str(e), 300)))
        try:
            return r.status, read_bounded(r, where)
        finally:
            r.release_conn()


def http_json(url, api_key=None, body=None, timeout=10, context=None):
    """GET (or POST a JSON body) -> (status, parsed JSON or text). Raises EndpointError when no answer or an
    answer over MAX_BODY bytes.

    context: a transport (Direct, PortForward, Proxy) or open_url's TLS keyword arguments (tls_options(),
    for Direct). No proxy, no redirects."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if api_key:
        headers["Authorization"] = "Bearer " + api_key
    transport = context if hasattr(context, "request") else Direct(context)
    status, raw = transport.request(url, "POST" if data is not None else "GET", data, headers, timeout)
    text = raw.decode("utf-8", "replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def _short(value, limit=300):
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


def check_health(ep, ctx):
    status, body = http_json(ep["url"] + "/health", timeout=10, context=ctx)
    if status != 200:
        raise EndpointError("/health answered %d (%s)" % (status, _short(body) or "loading or warming up"), status, _short(body))
    return "/health 200"


def check_models(ep, ctx):
    status, body = http_json(ep["url"] + "/v1/models", api_key=ep.get("api_key"), timeout=10, context=ctx)
    if status != 200:
        raise EndpointError("/v1/models answered %d: %s" % (status, _short(body)), status, _short(body))
    ids = [m.get("id") for m in (body.get("data") or [])] if isinstance(body, dict) else []
    if ep["model"] not in ids:
        raise EndpointError("/v1/models lists %s, not the served name %r" % (ids, ep["model"]), status, _short(body))
    return "/v1/models lists %s" % ", ".join(ids)


def check_completion(ep, ctx, prompt="Say hello.", max_tokens=4):
    req = dict(model=ep["model"], prompt=prompt, max_tokens=max_tokens, temperature=0)
    status, body = http_json(ep["url"] + "/v1/completions", api_key=ep.get("api_key"), body=req, timeout=120, context=ctx)
    if status != 200:
        raise EndpointError("/v1/completions answered %d: %s" % (status, _short(body)), status, _short(body))
    try:
        text = body["choices"][0]["text"]
    except (KeyError, IndexError, TypeError):
        raise EndpointError("/v1/completions answered without choices[0].text: %s" % _short(body), status, _short(body))
    # Any text counts (a model may well answer with white space); an empty answer does not.
    if not isinstance(text, str) or not text:
        raise EndpointError("/v1/completions returned empty text", status, _short(body))
    return text


def check_chat(ep, ctx, prompt="Say hello.", max_tokens=4):
    req = dict(model=ep["model"], messages=[dict(role="user", content=prompt)], max_tokens=max_tokens, temperature=0)
    status, body = http_json(ep["url"] + "/v1/chat/completions", api_key=ep.get("api_key"), body=req, timeout=120,
                             context=ctx)
    if status != 200:
        kind = "chat_template_missing" if status == 400 and "chat template" in _short(body, 2000).lower() else None
        raise EndpointError("/v1/chat/completions answered %d: %s" % (status, _short(body)), status, _short(body),
                            kind=kind)
    try:
        text = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise EndpointError("/v1/chat/completions answered without choices[0].message.content: %s" % _short(body),
                            status, _short(body))
    if not isinstance(text, str) or not text:
        raise EndpointError("/v1/chat/completions returned an empty message", status, _short(body))
    return "%d characters of chat answer" % len(text)


def check_sagemaker(ep, ctx, prompt="Say hello.", max_tokens=4):
    """vLLM's SageMaker-compatible routes: GET /ping and POST /invocations (a completion body)."""
    status, body = http_json(ep["url"] + "/ping", timeout=10, context=ctx)
    if status != 200:
        raise EndpointError("/ping answered %d: %s" % (status, _short(body)), status, _short(body))
    req = dict(model=ep["model"], prompt=prompt, max_tokens=max_tokens, temperature=0)
    status, body = http_json(ep["url"] + "/invocations", api_key=ep.get("api_key"), body=req, timeout=120, context=ctx)
    if status != 200:
        raise EndpointError("/invocations answered %d: %s" % (status, _short(body)), status, _short(body))
    try:
        body["choices"][0]["text"]
    except (KeyError, IndexError, TypeError):
        raise EndpointError("/invocations answered without choices[0].text: %s" % _short(body), status, _short(body))
    return "/ping 200, /invocations answered a completion"


def check_api_key_required(ep, ctx):
    """With an API key configured, a request without it must be refused (401)."""
    status, body = http_json(ep["url"] + "/v1/models", timeout=10, context=ctx)
    if status == 401:
        return "/v1/models without the key: 401"
    if 200 <= status < 300:
        raise EndpointError("/v1/models answered %d WITHOUT the API key: the engine serves anyone who reaches it"
                            % status, status, _short(body), kind="api_key_not_enforced")
    raise EndpointError("/v1/models without the key answered %d, not 401: %s" % (status, _short(body)), status,
                        _short(body))


def engine_version(ep, ctx):
    """vLLM's GET /version ({"version": "0.32.0"}), or "" when the engine does not say."""
    try:
        status, body = http_json(ep["url"] + "/version", timeout=10, context=ctx)
    except EndpointError:
        return ""
    if status == 200 and isinstance(body, dict) and isinstance(body.get("version"), str):
        return body["version"][:64]
    return ""


# --- Kubernetes side ---------------------------------------------------------------------------

def _state_of(status):
    """A container status dict -> (kind, reason, exit_code, message) of its current state."""
    state = status.get("state") or {}
    for kind in ("waiting", "terminated", "running"):
        if state.get(kind):
            s = state[kind]
            return kind, s.get("reason") or "", s.get("exitCode"), s.get("message") or ""
    return "unknown", "", None, ""


def _last_terminated(status):
    state = status.get("state") or {}
    if state.get("terminated"):
        return state["terminated"]
    return (status.get("lastState") or {}).get("terminated")


def leaving(pod):
    """True for a pod on its way out: being deleted (metadata.deletionTimestamp set; it may still be Running
    and Ready through its graceful termination) or finished (Succeeded/Failed, an evicted pod say)."""
    return bool((pod.get("metadata") or {}).get("deletionTimestamp")) or \
        (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def live_pods(pods):
    """The endpoint's pods that can serve it: those not on their way out (see leaving()).

    After a pod is deleted, its replacement and the old pod share the selector for up to the old pod's
    grace period; the old one's state (a ready engine, or an engine that exited on SIGTERM) says nothing
    about the endpoint, so neither the pod steps nor the diagnosis look at it."""
    return [p for p in pods if not leaving(p)]


def _engine_running(pod):
    return any((c.get("state") or {}).get("running") for c in (pod.get("status") or {}).get("containerStatuses") or [])


def _is_ready(pod):
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def pod_steps(pods):
    """(scheduled, init_done, detail) for the endpoint's live pods (plain dicts; see live_pods())."""
    if not pods:
        return False, False, "no pod matches the selector yet"
    scheduled = all(any(c.get("type") == "PodScheduled" and c.get("status") == "True"
                        for c in (p.get("status") or {}).get("conditions") or []) for p in pods)
    init_done = all(any(c.get("type") == "Initialized" and c.get("status") == "True"
                        for c in (p.get("status") or {}).get("conditions") or []) for p in pods)
    names = ", ".join(p["metadata"]["name"] for p in pods)
    return scheduled, init_done, "%d pod(s): %s" % (len(pods), names)


def summarize_pod(pod):
    st = pod.get("status") or {}
    out = dict(pod=pod["metadata"]["name"], phase=st.get("phase") or "", containers=[])
    for group, key in (("init", "initContainerStatuses"), ("main", "containerStatuses")):
        for c in st.get(key) or []:
            kind, reason, code, message = _state_of(c)
            out["containers"].append(dict(name=c.get("name"), kind=group, state=kind, reason=reason, exit_code=code,
                                          restarts=c.get("restartCount", 0), message=_short(message, 200)))
    return out


# The diagnosis is a table of rules, evaluated in order; the first that holds is the diagnosis. A rule is a
# predicate over the facts (pod_facts() for each live pod in turn, then endpoint_facts() for the endpoint as a
# whole) that returns the values its message and fix name (a dict, or True for none beyond the facts) or nothing,
# plus its code, message and fix (%-templates over the facts and those values), whether it is fatal, and which
# evidence it brings: the pod's events, the failing container's log tail ("container"), every log of the pod
# ("every_log"), or none (pod=False).
class Rule(object):
    __slots__ = ("code", "when", "message", "fix", "fatal", "pod", "evidence")

    def __init__(self, code, when, message, fix, fatal=True, pod=True, evidence=None):
        self.code, self.when, self.message, self.fix = code, when, message, fix
        self.fatal, self.pod, self.evidence = fatal, pod, evidence


def _literal(text):
    return text.replace("%", "%%")


_INIT_EXITED = "%(where)s: init container %(container)s of pod %(pod)s exited %(exit)d"
_SCHEDULE_FIX = ("Make a node fit the pod: check nodeSelector (nvidia.com/gpu.product), taints and resource requests "
                 "against `kubectl describe nodes`.")

POD_RULES = (
    # 1. images the node cannot pull
    Rule("image_pull", lambda f: f["pull"],
         "%(where)s: pod %(pod)s cannot pull image %(image)s for container %(container)s (%(reason)s): %(detail)s",
         "The image is not in the site registry (or the node cannot reach it): mirror it with the image mirror stage "
         "from the bundle, and pass image values only through llmops.onprem.site_image so they name the site registry."),
    # 2. not schedulable (the scheduler counts a terminating pod's requests until it is gone: wait for it)
    Rule("waiting_for_old_pod", lambda f: f["pending"] and f["going"],
         "%(where)s: pod %(pod)s is Pending (%(pending)s) while pod(s) %(going)s of this endpoint are still "
         "terminating and hold their resources",
         "Wait: the old pod frees its GPUs when its graceful termination ends (the chart's drain.preStopSeconds + "
         "drain.seconds + 10 s at most).", fatal=False),
    Rule("insufficient_gpu", lambda f: "nvidia.com/gpu" in f["pending"] and "Insufficient" in f["pending"],
         "%(where)s: pod %(pod)s is Pending: %(pending)s",
         "Not enough free GPUs: the model asks %(gpus)s GPU(s) per replica (plus one more replica's worth during a "
         "rolling update with maxSurge 1). Free GPUs, lower gpus for this model, or check the nodes' allocatable "
         "nvidia.com/gpu (GPU operator / device plugin)."),
    Rule("unschedulable", lambda f: f["pending"], "%(where)s: pod %(pod)s is Pending: %(pending)s", _SCHEDULE_FIX),
) + tuple(
    # 3. the downloader (init container) failed: model-pull's own exit codes, then any other
    Rule(code, lambda f, n=exit_code: f["init"] if f["init"] and f["init"]["exit"] == n else None,
         _INIT_EXITED + ": " + _literal(meaning) + ". Last log lines: %(tail)s", _literal(fix),
         fatal=rest[0] if rest else True, evidence="container")
    for exit_code, (code, meaning, fix, *rest) in sorted(DOWNLOADER_EXITS.items())
) + (
    Rule("init_failed", lambda f: f["init"], _INIT_EXITED + ". Last log lines: %(tail)s",
         "Read the init container's log (kubectl logs %(pod)s -c %(container)s) and fix its cause.",
         evidence="container"),
    # 4. the engine failed
    Rule("unsupported_architecture", lambda f: f["engine"] and f["engine"]["arch"] and f["engine"],
         "%(where)s: the engine in pod %(pod)s cannot serve this checkpoint: %(arch)s",
         "This vLLM release does not implement the checkpoint's architecture (config.json 'architectures'): serve it "
         "with a vLLM image that supports it (a newer release, mirrored into the site registry) or pick a checkpoint "
         "of a supported architecture.", evidence="container"),
    Rule("engine_failed", lambda f: f["engine"] and f["engine"]["exit"] is not None and f["engine"],
         "%(where)s: engine container of pod %(pod)s exited %(exit)s (restarts %(restarts)s). Last log lines: %(tail)s",
         "Read the engine log (kubectl logs %(pod)s -c %(container)s --previous) and fix its cause (GPU memory, "
         "engine arguments, checkpoint files).", evidence="container"),
)

ENDPOINT_RULES = (
    Rule("api_key_not_enforced", lambda f: f["error_kind"] == "api_key_not_enforced", "%(where)s: %(error)s",
         "Start the engine with an API key: the chart's apiKey.secretName names the Secret the engine reads "
         "VLLM_API_KEY from (the vllm_serving role creates it); an engine started without it answers anyone on the "
         "network.", pod=False),
    Rule("chat_template_missing", lambda f: f["error_kind"] == "chat_template_missing", "%(where)s: %(error)s",
         "The checkpoint's tokenizer has no chat template, so the engine cannot answer chat requests: add one to the "
         "checkpoint (tokenizer_config.json chat_template) or pass vLLM --chat-template, or set chat: false for this "
         "endpoint (a base model serves completions only).", pod=False),
    Rule("unauthorized", lambda f: f["status"] == 401 and f["via"] == "proxy",
         "%(where)s: %(url)s answered 401 Unauthorized through the API server's service proxy, which drops the "
         "Authorization header: the engine never sees the API key this way",
         "Probe an engine that requires an API key via portforward (the default of the vllm_serving role), or via "
         "direct from a controller that reaches the Service.", pod=False),
    Rule("unauthorized", lambda f: f["status"] == 401,
         "%(where)s: %(url)s answered 401 Unauthorized: the API key given is not the engine's",
         "Pass the key from the serving API-key Secret (the chart's apiKey.secretName) as api_key; the engine reads it "
         "from VLLM_API_KEY.", pod=False),
    Rule("no_pods", lambda f: not f["pods"] and f["namespace"],
         "%(where)s: no live pod in namespace %(namespace)s matches %(selector)r%(going_note)s",
         "Check that the serving chart is installed in that namespace and the selector names its labels.",
         fatal=False, pod=False),
    # The evidence of the first live pod that is not Ready (its events and every container's log tail), so a wait
    # that runs out explains itself.
    Rule("not_ready", lambda f: True, "%(where)s: not ready yet%(error_note)s%(pod_note)s%(leaving_note)s",
         "Wait longer (the start-up budget grows with the checkpoint's size) or read the engine log.",
         fatal=False, evidence="every_log"),
)


def pod_facts(pod, events, logs, going=()):
    """What the pod rules read of one live pod: the first container that cannot pull its image (pull), the
    scheduler's reason when the pod is not schedulable (pending, "" when it is), the first init container that
    exited non-zero (init), and the first engine container whose log names an unsupported architecture or that
    exited non-zero (engine)."""
    name = pod["metadata"]["name"]
    st = pod.get("status") or {}
    inits, mains = st.get("initContainerStatuses") or [], st.get("containerStatuses") or []
    facts = dict(pod=name, going=", ".join(sorted(going)), pull=None, pending="", init=None, engine=None)
    for c in inits + mains:
        kind, reason, _code, message = _state_of(c)
        if kind == "waiting" and reason in PULL_REASONS:
            facts["pull"] = dict(container=c.get("name"), image=c.get("image") or "", reason=reason,
                                 detail=_short(message, 300))
            break
    sched = [e.get("message") or "" for e in events.get(name, []) if e.get("reason") == "FailedScheduling"]
    for cond in st.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            facts["pending"] = sched[-1] if sched else cond.get("message") or ""
            if facts["pending"]:
                break
    for c in inits:
        term = _last_terminated(c)
        if term and term.get("exitCode") not in (None, 0):
            tail = (logs.get((name, c.get("name"))) or "").strip().splitlines()[-3:]
            facts["init"] = dict(container=c.get("name"), exit=term["exitCode"], tail=" | ".join(tail))
            break
    for c in mains:
        term = _last_terminated(c)
        log = logs.get((name, c.get("name"))) or ""
        arch = [ln for ln in log.splitlines() if UNSUPPORTED_ARCH in ln.lower()]
        failed = term and term.get("exitCode") not in (None, 0)
        if arch or failed:
            facts["engine"] = dict(container=c.get("name"), arch=_short(arch[-1].strip(), 400) if arch else "",
                                   exit=term.get("exitCode") if failed else None, restarts=c.get("restartCount", 0),
                                   tail=" | ".join(log.strip().splitlines()[-3:]))
            break
    return facts


def endpoint_facts(ep, pods, http_error=None, going=()):
    """What the endpoint rules read: the last HTTP error (its text, kind and status), how the endpoint is reached,
    its live pods, and the first of them that is not Ready (the pod the not_ready evidence comes from)."""
    error = "" if http_error is None else str(http_error)
    waiting_pod = next((p for p in pods if not _is_ready(p)), pods[0] if pods else None)
    leaving_names = ", ".join(sorted(going))
    return dict(error=error, error_kind=getattr(http_error, "kind", None), status=getattr(http_error, "status", None),
                via=ep.get("via"), url=ep.get("url"), namespace=ep.get("namespace"), selector=ep.get("selector"),
                pods=pods, pod=waiting_pod["metadata"]["name"] if waiting_pod else None,
                going_note=" (on their way out: %s)" % leaving_names if going else "",
                error_note=": %s" % error if http_error is not None else "",
                pod_note=" (pod %s: %s)" % (waiting_pod["metadata"]["name"], _pod_state(waiting_pod)) if waiting_pod else "",
                leaving_note="; on their way out: %s" % leaving_names if going else "")


def first_rule(rules, facts):
    """(rule, the values its templates read) of the first rule that holds over facts, or (None, None)."""
    for rule in rules:
        match = rule.when(facts)
        if match:
            return rule, dict(facts, **match) if isinstance(match, dict) else facts
    return None, None


def diagnose(ep, pods, events, logs, http_error=None, going=()):
    """What is wrong with one endpoint, from the cluster's view: the first of POD_RULES that holds for a live pod
    (pod by pod, in order), else the first of ENDPOINT_RULES (the last, not_ready, always holds).

    pods: the endpoint's live pod dicts (API JSON; live_pods()); events: {pod name: [event dicts]};
    logs: {(pod, container): text}; http_error: the last EndpointError of the HTTP steps (or None);
    going: names of the endpoint's pods on their way out (they may still hold GPUs the new pod waits for).
    Returns dict(code, message, fix, fatal, evidence), and container when the diagnosis names a failing container.
    """
    rule = None
    for pod in pods:
        rule, values = first_rule(POD_RULES, pod_facts(pod, events, logs, going))
        if rule is not None:
            break
    if rule is None:
        rule, values = first_rule(ENDPOINT_RULES, endpoint_facts(ep, pods, http_error, going))
    values = dict(values, where="%s (model %s)" % (ep.get("name"), ep.get("model")), gpus=ep.get("gpus", "its"))
    evidence = dict(pods=[summarize_pod(p) for p in pods], events=[], log_tail=[])
    if going:
        evidence["leaving"] = sorted(going)
    pod = values["pod"] if rule.pod else None
    container = values.get("container") if rule.evidence == "container" else None
    if pod is not None:
        evidence["events"] = [_short("%s %s: %s" % (e.get("type"), e.get("reason"), e.get("message")), 300)
                              for e in events.get(pod, [])][-8:]
        if container is not None:
            evidence["log_tail"] = (logs.get((pod, container)) or "").splitlines()[-20:]
        elif rule.evidence == "every_log":
            evidence["log_tail"] = ["[%s] %s" % (c, line) for (p, c), text in sorted(logs.items()) if p == pod
                                    for line in (text or "").splitlines()[-20:]]
    out = dict(code=rule.code, message=rule.message % values, fix=rule.fix % values, fatal=rule.fatal,
               evidence=evidence)
    if container is not None:
        out["container"] = container
    return out


def _pod_state(pod):
    """One line: the pod's phase, and each container that is not running-and-ready."""
    st = pod.get("status") or {}
    parts = [st.get("phase") or "unknown phase"]
    for key in ("initContainerStatuses", "containerStatuses"):
        for c in st.get(key) or []:
            kind, reason, code, _message = _state_of(c)
            if kind == "running" and (c.get("ready") or key == "initContainerStatuses"):
                parts.append("%s running" % c.get("name"))
            elif kind == "terminated" and code == 0 and key == "initContainerStatuses":
                continue
            else:
                parts.append("%s %s%s%s" % (c.get("name"), kind, " " + reason if reason else "",
                                            " exit %s" % code if code is not None else ""))
    return ", ".join(parts)


class Cluster(object):
    """Reads pods, events and logs with the kubernetes client (imported here, not at module load)."""

    def __init__(self, kubeconfig=None, context=None):
        try:
            from kubernetes import client, config
        except ImportError:
            raise EndpointError("the kubernetes Python package is needed to inspect pods (pip install kubernetes)")
        try:
            api = config.new_client_from_config(config_file=kubeconfig, context=context)
        except Exception as e:  # pylint: disable=broad-except  # ConfigException, missing file, bad YAML
            raise EndpointError("cannot load the kubeconfig %s: %s" % (kubeconfig or "(default)", e))
        self.core = client.CoreV1Api(api)
        self.api = api

    def _plain(self, obj):
        return self.api.sanitize_for_serialization(obj)

    def pods(self, namespace, selector):
        return [self._plain(p) for p in self.core.list_namespaced_pod(namespace, label_selector=selector or "").items]

    def events(self, namespace, pod):
        items = self.core.list_namespaced_event(namespace, field_selector="involvedObject.name=%s" % pod).items
        return [self._plain(e) for e in items]

    def log(self, namespace, pod, container, previous=False, lines=40):
        """The container's last lines, or "" when there are none to read. The kubelet answers a read of a
        container it has just replaced or removed with its own message ("unable to retrieve container logs
        for containerd://..."): that is not the container's output, so it counts as no log."""
        try:
            r = self.core.read_namespaced_pod_log(pod, namespace, container=container, previous=previous,
                                                  tail_lines=lines, _preload_content=False)
            text = r.data.decode("utf-8", "replace")
        except Exception:  # pylint: disable=broad-except  # no log yet (waiting container): nothing to add
            return ""
        return "" if text.lstrip().startswith(KUBELET_NO_LOG) else text

    def portforward(self, namespace, pod, port):
        """A kubernetes.stream port-forward to one port of a pod (its .socket(port) speaks to the pod)."""
        from kubernetes.stream import portforward
        return portforward(self.core.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(port))

    def raw_request(self, method, path, data, headers, timeout):
        """A request to the API server with the kubeconfig's credential (urllib3 response, body not read)."""
        cfg = self.api.configuration
        if cfg.refresh_api_key_hook is not None:
            cfg.refresh_api_key_hook(cfg)
        headers = dict(headers)
        token = cfg.get_api_key_with_prefix("authorization")
        if token:
            headers["Authorization"] = token
        return self.api.rest_client.pool_manager.request(method, cfg.host + path, body=data, headers=headers,
                                                         preload_content=False, timeout=timeout, redirect=False)

    def snapshot(self, namespace, selector):
        """(live pods, events by pod, logs by (pod, container), names of pods on their way out) for a diagnosis."""
        everything = self.pods(namespace, selector)
        pods = live_pods(everything)
        going = [p["metadata"]["name"] for p in everything if leaving(p)]
        events, logs = {}, {}
        for p in pods:
            name = p["metadata"]["name"]
            events[name] = self.events(namespace, name)
            st = p.get("status") or {}
            for c in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or []):
                state = c.get("state") or {}
                previous = not state.get("terminated") and bool((c.get("lastState") or {}).get("terminated"))
                if state.get("waiting") and not previous:
                    continue
                text = self.log(namespace, name, c["name"], previous=previous)
                if not text.strip():
                    # Restarted between the status read and the log read: the failed run is now the previous one
                    # (or, read as the previous one, it was replaced again and is the current one).
                    text = self.log(namespace, name, c["name"], previous=not previous)
                logs[(name, c["name"])] = text
        return pods, events, logs, going


class Probe(object):
    """Walks one endpoint through its steps; call poll() until done."""

    def __init__(self, ep, cluster=None, clock=time.monotonic, prompt="Say hello.", max_tokens=4):
        self.ep = ep
        self.cluster = cluster if ep.get("namespace") else None
        self.clock = clock
        self.prompt, self.max_tokens = prompt, max_tokens
        self.steps = [s for s in STEPS if (self.cluster is not None or s in HTTP_STEPS)
                      and not (s == "chat" and ep.get("chat") is False)
                      and not (s == "api_key" and not ep.get("api_key"))]
        self.index = 0
        self.started = clock()
        self.step_started = self.started
        self.results = []
        self.text = ""
        self.error = None
        self.diagnosis = None
        self.unread_rounds = 0
        self.version = ""
        self.pulls = []  # the model pulls running in the endpoint's pods (progress documents), from the last snapshot
        tls = tls_options(ep.get("ca_file"), ep.get("validate_certs", True))
        via = ep.get("via") or "direct"
        if via == "portforward":
            self.ctx = PortForward(cluster, ep["namespace"], ep.get("selector"), tls)
        elif via == "proxy":
            self.ctx = Proxy(cluster, ep["namespace"], ep["service"])
        else:
            self.ctx = Direct(tls)

    @property
    def done(self):
        return self.index >= len(self.steps) or (self.diagnosis is not None and self.diagnosis["fatal"])

    @property
    def ready(self):
        return self.index >= len(self.steps)

    def _pass(self, detail):
        now = self.clock()
        self.results.append(dict(step=self.steps[self.index], ok=True, seconds=round(now - self.step_started, 3),
                                 detail=detail))
        self.index += 1
        self.step_started = now

    def poll(self):
        """Try the current step (and the following ones while they pass)."""
        while not self.done:
            step = self.steps[self.index]
            try:
                if step in ("pods_scheduled", "init_done"):
                    pods = live_pods(self.cluster.pods(self.ep["namespace"], self.ep.get("selector")))
                    scheduled, init_done, detail = pod_steps(pods)
                    if not (scheduled if step == "pods_scheduled" else init_done):
                        raise EndpointError("%s: %s" % (step, detail))
                    self._pass(detail)
                elif step == "health":
                    self._pass(check_health(self.ep, self.ctx))
                elif step == "models":
                    self._pass(check_models(self.ep, self.ctx))
                elif step == "completion":
                    self.text = check_completion(self.ep, self.ctx, self.prompt, self.max_tokens)
                    self._pass("%d characters of text" % len(self.text))
                elif step == "chat":
                    self._pass(check_chat(self.ep, self.ctx, self.prompt, self.max_tokens))
                elif step == "sagemaker":
                    self._pass(check_sagemaker(self.ep, self.ctx, self.prompt, self.max_tokens))
                else:
                    self._pass(check_api_key_required(self.ep, self.ctx))
            except EndpointError as e:
                self.error = e
                self.diagnose()
                return
        self.error = None
        self.diagnosis = None
        self.pulls = []
        if not self.version:
            self.version = engine_version(self.ep, self.ctx)

    def diagnose(self):
        if self.cluster is not None:
            try:
                pods, events, logs, going = self.cluster.snapshot(self.ep["namespace"], self.ep.get("selector"))
            except Exception as e:  # pylint: disable=broad-except  # the API may blip; keep waiting
                self.diagnosis = dict(code="cluster_unreadable", message="cannot read pods: %s" % e,
                                      fix="Check the kubeconfig and the API server.", fatal=False, evidence={})
                return
        else:
            pods, events, logs, going = [], {}, {}, []
        self.pulls = pull_progress(self.ep, pods, logs)
        d = diagnose(self.ep, pods, events, logs, self.error, going)
        if d["fatal"] and d.get("container") and not d["evidence"].get("log_tail") and \
                self.unread_rounds < UNREAD_LOG_ROUNDS:
            # The verdict is known (an exit code, say) but the log that says why was unreadable this round.
            self.unread_rounds += 1
            d = dict(d, fatal=False)
        self.diagnosis = d

    def result(self):
        now = self.clock()
        steps = list(self.results)
        if not self.ready:
            steps.append(dict(step=self.steps[self.index], ok=False, seconds=round(now - self.step_started, 3),
                              detail=str(self.error) if self.error else ""))
        out = dict(name=self.ep["name"], url=self.ep["url"], model=self.ep["model"], ready=self.ready,
                   seconds=round(now - self.started, 3), steps=steps, completion=self.text, version=self.version,
                   diagnosis=None if self.ready else self.diagnosis)
        return out


def pull_progress(ep, pods, logs):
    """The model pulls running in an endpoint's pods, as progress documents: the last progress line of each running
    init container's log (model-pull prints one about every 2 s, in the words of _progress.render)."""
    out = []
    for pod in pods:
        name = pod["metadata"]["name"]
        for c in (pod.get("status") or {}).get("initContainerStatuses") or []:
            if not (c.get("state") or {}).get("running"):
                continue
            doc = _progress.last_progress(logs.get((name, c.get("name"))) or "", "model-pull: progress ")
            if doc is not None:
                doc["what"] = "%s (pod %s)" % (ep["name"], name)
                out.append(doc)
    return out


class PullRelay(object):
    """Keeps a progress file (docs/progress.md) holding the model pulls the probes saw, all endpoints together,
    for the llmops.onprem.progress callback: running while any pull runs, done when the pulls it saw are over
    (their init containers finished), failed when the wait ends with one still running."""

    def __init__(self, path, clock=time.monotonic):
        self.path, self.clock = path, clock
        self.started = None
        self.last = None  # the last document written

    def update(self, probes, final=False):
        if not self.path:
            return
        pulls = [d for p in probes for d in p.pulls]
        if pulls:
            doc = _progress.combine(pulls, "model_pull", ", ".join(d["what"] for d in pulls))
            if final and doc["state"] == "running":
                doc.update(state="failed", phase="failed", eta_s=None,
                           error="the wait ended while the model pull was still running")
        elif self.last is not None and self.last["state"] == "running":
            # Every pull the probes saw is over: their init containers finished (a failed one is a diagnosis).
            doc = dict(self.last, state="done", phase="done", bytes_done=self.last["bytes_total"],
                       files_done=self.last["files_total"], percent=100.0, eta_s=0.0, updated=_progress.utc_now())
        else:
            return
        now = self.clock()
        self.started = now if self.started is None else self.started
        doc["elapsed_s"] = round(now - self.started, 1)
        if self.last is None or self._news(doc, self.last):
            _progress.write_document(self.path, doc)
            self.last = doc

    @staticmethod
    def _news(doc, last):
        """Whether doc says more than last (the same pull line again, a round later, is not rewritten)."""
        return any(doc.get(k) != last.get(k) for k in doc if k not in ("updated", "elapsed_s"))


def wait(endpoints, cluster_factory=None, timeout=900, interval=2.0, clock=time.monotonic, sleep=time.sleep,
         prompt="Say hello.", max_tokens=4, progress_file=None):
    """Probe every endpoint until all are ready, one fails for good, or timeout; return their results. With
    progress_file, the model pulls seen while waiting are kept there (PullRelay)."""
    cluster = None
    if any(ep.get("namespace") for ep in endpoints):
        cluster = cluster_factory()
    probes = [Probe(ep, cluster, clock, prompt, max_tokens) for ep in endpoints]
    relay = PullRelay(progress_file, clock)
    deadline = clock() + timeout
    while True:
        for p in probes:
            if not p.done:
                p.poll()
        relay.update(probes)
        if all(p.done for p in probes) or clock() >= deadline:
            break
        sleep(interval)
    for p in probes:
        if not p.done and p.diagnosis is None:
            p.diagnose()
    relay.update(probes, final=True)
    return [p.result() for p in probes]
