# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private helpers of the model_engine stage; they may change without notice.

Pure functions, unit tested without a cluster: the chart values of scaleapi/llm-engine's
model-engine chart from the site's facts, the problems (each naming the value and the fix) of
every trap the vendor's chart and docs hold for a site without internet, the images model-engine
names (in its rendered objects and at run time), and the check of the rendered objects.
"""

from __future__ import annotations

import copy
import re

from ansible_collections.llmops.onprem.plugins.module_utils._egress import bad_tag, host_of, mask, public_host, urls_in
from ansible_collections.llmops.onprem.plugins.module_utils._gpu import model_engine_gpu_type
from ansible_collections.llmops.onprem.plugins.module_utils._oci import (
    OnpremError, format_reference, normalize_reference, parse_reference, site_reference)

# The model-engine release the vendor's values_sample.yaml pins (chart model-engine 0.2.7).
DEFAULT_TAG = "e360bfb1d21d9d4e7b7fcb6b29ca752095b4d0f4"
VENDOR_PREFIX = "public.ecr.aws/b2z8n5q1"

# Upstream images, as the vendor publishes them (seed 000, "Images to Mirror"). The chart's own
# defaults for the utility images are `latest`; these pin a version.
DEFAULT_IMAGES = {
    "repository": VENDOR_PREFIX + "/model-engine",
    "tag": DEFAULT_TAG,
    "vllm_repository": VENDOR_PREFIX + "/vllm",
    "tensorrt_llm_repository": VENDOR_PREFIX + "/tensorrt-llm",
    "batch_inference_vllm_repository": VENDOR_PREFIX + "/llm-engine/batch-infer-vllm",
    "tgi_repository": VENDOR_PREFIX + "/text-generation-inference",
    "lightllm_repository": VENDOR_PREFIX + "/lightllm",
    "triton_repository": VENDOR_PREFIX + "/std-ml-srv",
    "triton_tag": "",
    # inferenceFramework.<name>: the tag model-engine appends to the framework's repository when
    # an endpoint asks for the framework's "latest". Empty: the framework is not offered at the site.
    "frameworks": {
        "vllm": "",
        "vllm_batch": "0.17.1-batch",
        "vllm_batch_v2": "0.17.1-batch",
        "tensorrt_llm": "",
        "text_generation_inference": "",
        "lightllm": "",
        "deepspeed": "",
    },
    "utility": {
        "busybox": "public.ecr.aws/docker/library/busybox:1.36.1",
        "curl": "docker.io/curlimages/curl:7.72.0",
        "ubuntu": "public.ecr.aws/ubuntu/ubuntu:22.04",
    },
}

# Which repository setting serves which inference framework (model-engine's service config).
FRAMEWORK_REPOSITORY = {
    "vllm": "vllm_repository",
    "vllm_batch": "batch_inference_vllm_repository",
    "vllm_batch_v2": "batch_inference_vllm_repository",
    "tensorrt_llm": "tensorrt_llm_repository",
    "text_generation_inference": "tgi_repository",
    "lightllm": "lightllm_repository",
    "deepspeed": None,  # no repository setting: model-engine cannot pull it from a site registry
}
# The tag of a framework the site does not offer: an endpoint that asks for it fails with an
# image pull error that says so, instead of pulling a moving `latest`.
NOT_OFFERED = "not-offered-at-this-site"

# The GpuType names model-engine knows (model_engine_server/domain/entities GpuType); endpoint pods
# select k8s.amazonaws.com/accelerator: <GpuType>.
GPU_TYPES = (
    "nvidia-tesla-t4", "nvidia-ampere-a10", "nvidia-ampere-a100", "nvidia-ampere-a100e",
    "nvidia-hopper-h100", "nvidia-hopper-h100-1g20gb", "nvidia-hopper-h100-3g40gb",
)
ACCELERATOR_LABEL = "k8s.amazonaws.com/accelerator"
PRODUCT_LABEL = "nvidia.com/gpu.product"
# GPU feature discovery's nvidia.com/gpu.product values map to GpuTypes in _gpu.model_engine_gpu_type
# (one table for the GPU stages' facts and this stage).
# GPU memory per device (GB) when the node has no nvidia.com/gpu.memory label.
GPU_MEMORY_GB = {
    "nvidia-tesla-t4": 16, "nvidia-ampere-a10": 24, "nvidia-ampere-a100": 40, "nvidia-ampere-a100e": 80,
    "nvidia-hopper-h100": 80, "nvidia-hopper-h100-1g20gb": 20, "nvidia-hopper-h100-3g40gb": 40,
}

# The security contexts seed 001 recommends for production (non-root, no privilege escalation,
# every capability dropped; the root filesystem stays writable: the images write under /tmp).
POD_SECURITY_CONTEXT = {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY_CONTEXT = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": False,
                              "capabilities": {"drop": ["ALL"]}}

CA_MOUNT = "/etc/llmops/site-ca"
AWS_CONFIG_MOUNT = "/etc/llmops/aws"
# Where the chart's control-plane pods find their config (templates/_helpers.tpl).
DATABASE_KEY = "database_url"  # serviceEnvBase: secretKeyRef key database_url, fixed
ISTIO_GROUPS = ("istio.io",)
_PLACEHOLDER = re.compile(r"\$\{([A-Z_]+)\}")
_IMAGE_LINE = re.compile(r"^\s*-?\s*image:\s*[\"']?([^\"'\s]+)", re.M)


def merge(base, over):
    """Recursive dict merge (over wins); lists and scalars are replaced."""
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def get(d, path, default=None):
    cur = d
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return default
        cur = cur[part]
    return cur


def image_settings(images):
    """The image settings with the defaults filled in (one place for the role and the bundle)."""
    out = merge(DEFAULT_IMAGES, images or {})
    return out


def _site(ref, registry):
    return site_reference(ref, registry)


def wanted_images(images, registry=""):
    """Every image model-engine names, at install and at run time, as [{name, upstream, site}].

    ``name`` says which setting names it (``image.gatewayRepository``, ``inferenceFramework.vllm``,
    ``utilityImages.curl``, ...); ``upstream`` is what the bundle must carry; ``site`` is its name
    in the site registry (``upstream`` when no registry is given).
    """
    s = image_settings(images)
    out = []

    def add(name, repository, tag):
        upstream = normalize_reference("%s:%s" % (repository, tag) if tag else repository)
        out.append(dict(name=name, upstream=upstream, site=_site(upstream, registry) if registry else upstream))

    # gateway, builder, cacher, the migration hook and the forwarder: one image.
    add("image.gatewayRepository (also builder, cacher, forwarder, migration Job)", s["repository"], s["tag"])
    for fw, tag in sorted(s["frameworks"].items()):
        repo_key = FRAMEWORK_REPOSITORY.get(fw)
        if not tag or not repo_key:
            continue
        add("inferenceFramework.%s (%s)" % (fw, repo_key), s[repo_key], tag)
    if s.get("triton_tag"):
        add("triton.image", s["triton_repository"], s["triton_tag"])
    for name, ref in sorted(s["utility"].items()):
        add("utilityImages.%s" % name, ref, None)
    # One entry per upstream image (vllm_batch and vllm_batch_v2 may share one).
    seen, uniq = set(), []
    for i in out:
        if i["upstream"] not in seen:
            seen.add(i["upstream"])
            uniq.append(i)
    return uniq


def _repo_only(ref, registry):
    """The site repository (no tag) of an upstream repository."""
    p = parse_reference(_site(ref, registry) if registry else normalize_reference(ref))
    return format_reference(p["registry"], p["repository"])


def _split_utility(ref, registry):
    p = parse_reference(_site(ref, registry) if registry else normalize_reference(ref))
    return dict(repository=format_reference(p["registry"], p["repository"]),
                tag=(p["tag"] or "") + ("@" + p["digest"] if p["digest"] else ""))


def gpu_inventory(nodes, gpu_types):
    """Per GPU node: its GpuType from the GPU feature discovery labels (or the inventory's map).

    Returns (entries, problems); an entry is {node, product, gpu_type, gpus, memory_gb}.
    """
    mapping = {}
    problems = []
    for product, gtype in sorted((gpu_types or {}).items()):
        if gtype not in GPU_TYPES:
            problems.append(
                "model_engine_gpu_types maps %s to %r, which is not a GpuType model-engine knows; use one of %s"
                % (product, gtype, ", ".join(GPU_TYPES)))
            continue
        mapping[product] = gtype
    entries = []
    for node in nodes or []:
        labels = node.get("labels") or {}
        product = labels.get(PRODUCT_LABEL)
        if not product:
            continue
        mem = labels.get("nvidia.com/gpu.memory")
        if mem is not None and str(mem).isdigit():
            memory_mib = int(mem)
        else:  # no GFD memory label: the product name's size (NVIDIA-A100-SXM4-80GB), else unknown
            m = re.search(r"(\d+)GB", product)
            memory_mib = int(m.group(1)) * 1024 if m else 0
        gtype = mapping.get(product) or model_engine_gpu_type(product, memory_mib)
        if not gtype:
            problems.append(
                "node %s has GPU product %s (label %s), which has no model-engine GpuType: endpoint pods select "
                "%s: <GpuType> and the chart knows only %s. Map it in model_engine_gpu_types (for example "
                "model_engine_gpu_types: {%s: nvidia-hopper-h100}) or keep the node out of model_engine_gpu_nodes"
                % (node.get("name"), product, PRODUCT_LABEL, ACCELERATOR_LABEL, ", ".join(GPU_TYPES), product))
            continue
        try:
            gpus = int(labels.get("nvidia.com/gpu.count") or node.get("gpus") or 1)
        except ValueError:
            gpus = 1
        memory_gb = int(memory_mib / 1024) if memory_mib else GPU_MEMORY_GB[gtype]
        entries.append(dict(node=node.get("name"), product=product, gpu_type=gtype, gpus=gpus, memory_gb=memory_gb))
    return entries, problems


def hardware(entries, per_gpu, by_model):
    """recommendedHardware, balloons and imageCache.devices from the GPU inventory."""
    types = {}
    for e in entries:
        t = types.setdefault(e["gpu_type"], dict(gpus=0, memory_gb=e["memory_gb"]))
        t["gpus"] = max(t["gpus"], e["gpus"])
        t["memory_gb"] = min(t["memory_gb"], e["memory_gb"])
    tiers = []
    for gtype, t in types.items():
        n = 1
        while n <= t["gpus"]:
            tiers.append(dict(gpu_memory_le=t["memory_gb"] * n, cpus=per_gpu["cpus"] * n, gpus=n,
                              memory="%dGi" % (per_gpu["memory_gb"] * n),
                              storage="%dGi" % max(per_gpu["storage_gb"], t["memory_gb"] * n * 2),
                              gpu_type=gtype, nodes_per_worker=1))
            n *= 2
    tiers.sort(key=lambda x: (x["gpu_memory_le"], x["gpus"], x["gpu_type"]))
    devices = [dict(name=g.replace("nvidia-", "").split("-", 1)[-1], nodeSelector={ACCELERATOR_LABEL: g},
                    tolerations=[dict(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")])
               for g in sorted(types)]
    return dict(byGpuMemoryGb=tiers, byModelName=list(by_model or [])), devices, sorted(types)


def _redis_urls(redis, ca_path):
    host, port = redis.get("host"), redis.get("port")
    query = "ssl_cert_reqs=required&ssl_ca_certs=%s" % ca_path
    base = "rediss://%s:%s" % (host, port)
    return dict(cache="%s/0?%s" % (base, query),
                broker="rediss://:$(REDIS_AUTH_TOKEN)@%s:%s/0?%s" % (host, port, query),
                backend="rediss://:$(REDIS_AUTH_TOKEN)@%s:%s/1?%s" % (host, port, query))


def build_values(s):
    """The chart values for settings ``s`` (see the role's argument spec), before the overrides."""
    reg = s.get("site_registry") or ""
    im = image_settings(s.get("images"))
    redis = s.get("redis") or {}
    pg = s.get("postgres") or {}
    store = s.get("object_store") or {}
    me_store = store.get("model_engine") or {}
    rw = get(store, "credentials.readwrite.k8s_secret", {}) or {}
    ca_file = "%s/ca.crt" % CA_MOUNT
    urls = _redis_urls(redis, ca_file) if redis else {}
    repo = _repo_only(im["repository"], reg)
    selector = dict(s.get("node_selector") or {})
    # Helm merges maps: the chart's node-lifecycle: normal survives unless nulled.
    selector.setdefault("node-lifecycle", None)
    frameworks = {}
    for fw, tag in im["frameworks"].items():
        frameworks[fw] = tag if tag and FRAMEWORK_REPOSITORY.get(fw) else NOT_OFFERED
    env = [
        dict(name="AWS_CONFIG_FILE", value="%s/config" % AWS_CONFIG_MOUNT),
        dict(name="AWS_CA_BUNDLE", value=ca_file),
        dict(name="REQUESTS_CA_BUNDLE", value=ca_file),
        dict(name="SSL_CERT_FILE", value=ca_file),
        dict(name="AWS_EC2_METADATA_DISABLED", value="true"),
    ]
    if store:
        env += [
            dict(name="AWS_ENDPOINT_URL", value=store.get("s3_endpoint_url", "")),
            dict(name="AWS_REGION", value=store.get("region", "")),
            dict(name="AWS_ACCESS_KEY_ID", valueFrom=dict(secretKeyRef=dict(
                name=rw.get("name", ""), key=rw.get("access_key_key", "access-key")))),
            dict(name="AWS_SECRET_ACCESS_KEY", valueFrom=dict(secretKeyRef=dict(
                name=rw.get("name", ""), key=rw.get("secret_key_key", "secret-key")))),
        ]
    if redis:
        # After REDIS_AUTH_TOKEN in the container's env (extraEnvVars come last), so Kubernetes
        # expands $(REDIS_AUTH_TOKEN) from the Secret: the password is never a plain value.
        env += [dict(name="CELERY_BROKER_URL", value=urls["broker"]),
                dict(name="CELERY_RESULT_BACKEND", value=urls["backend"])]
    entries = s.get("_gpu_entries") or []
    rec, devices, gpu_types = hardware(entries, s.get("hardware_per_gpu") or dict(cpus=8, memory_gb=48, storage_gb=80),
                                       s.get("recommended_hardware_by_model"))
    balloons_wanted = s.get("balloons") or {}
    infra = dict(
        cloud_provider="onprem",
        k8s_cluster_name=s.get("cluster_name", "llmops"),
        dns_host_domain=s.get("dns_host_domain", "model-engine.llmops.internal"),
        default_region=me_store.get("default_region") or store.get("region") or "us-east-1",
        ml_account_id="onprem",
        docker_repo_prefix=reg or "",
        redis_host=redis.get("host", ""),
        s3_bucket=me_store.get("s3_bucket", ""),
        db_engine_pool_size=10, db_engine_max_overflow=10, db_engine_echo=False, db_engine_echo_pool=False,
        db_engine_disconnect_strategy="pessimistic",
    )
    if redis:
        infra["redis_port"] = str(redis.get("port"))
    if s.get("prometheus_address"):
        infra["prometheus_server_address"] = s["prometheus_address"]
    launch = dict(
        endpoint_namespace=s.get("endpoint_namespace", ""),
        cache_redis_onprem_url=urls.get("cache", ""),
        s3_file_llm_fine_tuning_job_repository=me_store.get("s3_file_llm_fine_tuning_job_repository", ""),
        hf_user_fine_tuned_weights_prefix=me_store.get("hf_user_fine_tuned_weights_prefix", ""),
        dd_trace_enabled=False,
        istio_enabled=False,
        sensitive_log_mode=True,
        billing_queue_arn="unused",
        model_primitive_host="unused",
        vllm_repository=_repo_only(im["vllm_repository"], reg),
        tensorrt_llm_repository=_repo_only(im["tensorrt_llm_repository"], reg),
        batch_inference_vllm_repository=_repo_only(im["batch_inference_vllm_repository"], reg),
        tgi_repository=_repo_only(im["tgi_repository"], reg),
        lightllm_repository=_repo_only(im["lightllm_repository"], reg),
        # Custom image builds are not supported on-prem (OnPremDockerRepository); these name
        # site repositories so nothing points at the vendor's registry.
        user_inference_base_repository="%s/launch/inference" % (reg or "site-registry"),
        user_inference_pytorch_repository="%s/launch/inference/pytorch" % (reg or "site-registry"),
        user_inference_tensorflow_repository="%s/launch/inference/tf" % (reg or "site-registry"),
        docker_image_layer_cache_repository="%s/launch-docker-build-cache" % (reg or "site-registry"),
    )
    values = dict(
        tag=im["tag"],
        context=s.get("context", "onprem"),
        image=dict(gatewayRepository=repo, builderRepository=repo, cacherRepository=repo,
                   forwarderRepository=repo, pullPolicy="IfNotPresent"),
        secrets=dict(kubernetesDatabaseSecretName=get(pg, "k8s_secret.name", "")),
        db=dict(runDbMigrationScript=True, runDbInitScript=False),
        serviceAccount=dict(annotations={}, namespaces=[]),
        imageBuilderServiceAccount=dict(create=False, annotations={}),
        service=dict(type="ClusterIP", port=80),
        virtualservice=dict(enabled=False, annotations={}, hostDomains=[], gateways=[]),
        destinationrule=dict(enabled=False, annotations={}),
        hostDomain=dict(prefix="http://"),
        replicaCount=dict(s.get("replicas") or dict(gateway=2, cacher=1, builder=1)),
        autoscaling=dict(horizontal=dict(enabled=False, minReplicas=2, maxReplicas=10, targetConcurrency=50),
                         vertical=dict(enabled=False), prewarming=dict(enabled=False)),
        celery_autoscaler=dict(enabled=False, num_shards=1),
        podDisruptionBudget=dict(enabled=True, minAvailable=1),
        resources=dict(s.get("resources") or dict(requests=dict(cpu=1, memory="2Gi"))),
        nodeSelector=selector,
        balloonNodeSelector=dict(selector),
        tolerations=list(s.get("tolerations") or []),
        affinity={},
        serviceTemplate=dict(securityContext=dict(capabilities=dict(drop=["all"])), mountInfraConfig=True,
                             createServiceAccount=True, serviceAccountName="model-engine",
                             # The chart creates the endpoint pods' ServiceAccount only when this map is
                             # not empty (templates/service_account_inference.yaml).
                             serviceAccountAnnotations={"llmops.onprem/purpose": "model-engine endpoint pods"}),
        config=dict(values=dict(infra=infra, launch=launch)),
        triton=dict(image=dict(repository=_repo_only(im["triton_repository"], reg), tag=im.get("triton_tag") or NOT_OFFERED)),
        imageCache=dict(devices=devices),
        celeryBrokerType="elasticache",
        celery_broker_type_redis=True,
        datadog=dict(enabled=False),
        dd_trace_enabled=False,
        spellbook=dict(enabled=False),
        recommendedHardware=rec,
        balloonConfig=dict(reserveHighPriority=True),
        balloons=[dict(acceleratorName=g, replicaCount=int(balloons_wanted.get(g, 0)), gpuCount=1) for g in gpu_types],
        inferenceFramework=frameworks,
        utilityImages=dict((k, _split_utility(v, reg)) for k, v in sorted(im["utility"].items())),
        keda=dict(cooldownPeriod=int(s.get("keda_cooldown", 300))),
        redis=dict(auth=None, authSecretName=get(redis, "k8s_secret.name", ""),
                   authSecretKey=get(redis, "k8s_secret.key", ""), enableTLS=True, enableAuth=False,
                   kedaSecretName="", unsafeSsl=False),
        podSecurityContext=dict(POD_SECURITY_CONTEXT if s.get("pod_security_context") is None
                                else s["pod_security_context"]),
        containerSecurityContext=dict(CONTAINER_SECURITY_CONTEXT if s.get("container_security_context") is None
                                      else s["container_security_context"]),
        automountServiceAccountToken=True,
        extraEnvVars=env,
        extraVolumes=[dict(name="llmops-site-ca", secret=dict(secretName=s.get("ca_secret", "llmops-site-ca"))),
                      dict(name="llmops-aws-config", configMap=dict(name=s.get("aws_config_map", "model-engine-aws-config")))],
        extraVolumeMounts=[dict(name="llmops-site-ca", mountPath=CA_MOUNT, readOnly=True),
                           dict(name="llmops-aws-config", mountPath=AWS_CONFIG_MOUNT, readOnly=True)],
        extraPodEnvFrom=[dict(secretRef=dict(name=s.get("endpoint_object_store_secret", "model-engine-object-store")))],
        modelCache=dict(enabled=False),
    )
    if redis:
        values["redisHost"] = redis.get("host")
        values["redisPort"] = str(redis.get("port"))
    if store:
        values["s3EndpointUrl"] = store.get("s3_endpoint_url", "")
    if s.get("pull_secret"):
        values["imagePullSecrets"] = [dict(name=s["pull_secret"])]
    return values


def _is_site(ref, registry):
    return bool(registry) and ref.split("/", 1)[0] == registry.split("/", 1)[0]


def check_values(v, s):
    """The problems of the final values (after the inventory's overrides), each naming the value and the fix."""
    reg = s.get("site_registry") or ""
    p = []
    add = p.append
    if get(v, "config.values.infra.cloud_provider") != "onprem":
        add("config.values.infra.cloud_provider is %r: model-engine then loads the AWS storage, auth and registry "
            "clients. Set it to onprem (remove it from model_engine_values)" % get(v, "config.values.infra.cloud_provider"))
    if v.get("celeryBrokerType") != "elasticache":
        add("celeryBrokerType is %r: the chart treats anything but the literal elasticache as SQS/Service Bus "
            "(templates/celery_autoscaler_stateful_set.yaml, _helpers.tpl), whatever the docs say about redis. "
            "Set celeryBrokerType: elasticache" % v.get("celeryBrokerType"))
    if v.get("celery_broker_type_redis") is not True:
        add("celery_broker_type_redis is %r: the service config then lacks celery_broker_type_redis and Celery "
            "falls back to SQS. Set celery_broker_type_redis: true" % v.get("celery_broker_type_redis"))
    if not get(v, "db.runDbMigrationScript"):
        add("db.runDbMigrationScript is false: the schema is never created and model creation fails with "
            "missing-table errors (seed 001). Set db.runDbMigrationScript: true (the migration runs as the chart's "
            "pre-install/pre-upgrade hook)")
    if get(v, "secrets.cloudDatabaseSecretName"):
        add("secrets.cloudDatabaseSecretName is set: that reads a cloud secret store the site does not have. "
            "Remove it; the role sets secrets.kubernetesDatabaseSecretName")
    if not get(v, "secrets.kubernetesDatabaseSecretName"):
        add("secrets.kubernetesDatabaseSecretName is empty: the pods get no ML_INFRA_DATABASE_URL. Run the postgres "
            "stage first (postgres_connection.k8s_secret) or set model_engine_values.secrets.kubernetesDatabaseSecretName")
    key = get(s, "postgres.k8s_secret.key")
    if key and key != DATABASE_KEY:
        add("postgres_connection.k8s_secret.key is %r, but the chart reads the key %s of "
            "secrets.kubernetesDatabaseSecretName (templates/_helpers.tpl, fixed). Set postgres_k8s_secret_key: %s"
            % (key, DATABASE_KEY, DATABASE_KEY))
    # Redis: TLS, verified against the site CA, the password only through the Secret.
    if get(v, "redis.auth"):
        add("redis.auth holds the Redis password as a plain value (it lands in every pod spec). Remove it; the "
            "role sets redis.authSecretName/authSecretKey from redis_connection.k8s_secret")
    if not get(v, "redis.authSecretName"):
        add("redis.authSecretName is empty: the pods get no REDIS_AUTH_TOKEN. Run the redis stage first "
            "(redis_connection.k8s_secret) or set model_engine_values.redis.authSecretName")
    if get(v, "redis.unsafeSsl"):
        add("redis.unsafeSsl is true: KEDA skips the Redis certificate check. Set redis.unsafeSsl: false (the site "
            "CA signs Redis' certificate)")
    if not get(v, "redis.enableTLS"):
        add("redis.enableTLS is false, but the site's Redis speaks only TLS. Set redis.enableTLS: true")
    if get(v, "redis.enableAuth"):
        add("redis.enableAuth is true: the chart then renders a KEDA TriggerAuthentication that reads the password "
            "from AWS Secrets Manager (templates/trigger_authentication.yaml). Set redis.enableAuth: false")
    for where, url in urls_in(v):
        low = url.lower()
        if low.startswith("redis://"):
            add("%s is %s: plain-text Redis. The site's Redis speaks TLS; use rediss:// with "
                "ssl_cert_reqs=required (remove the override to get the role's URL)" % (where, url))
        if low.startswith("rediss://") and ("ssl_cert_reqs=none" in low or "cert_none" in low
                                            or "ssl_cert_reqs=required" not in low):
            add("%s is %s: the certificate is not verified (seed 002 used ssl_cert_reqs=none). Use "
                "ssl_cert_reqs=required&ssl_ca_certs=%s/ca.crt (remove the override to get the role's URL)"
                % (where, mask(url), CA_MOUNT))
        m = re.match(r"^[a-z]+s?://([^/@]*)@", url, re.I)
        if m and ":" in m.group(1) and m.group(1).split(":", 1)[1] not in ("$(REDIS_AUTH_TOKEN)", ""):
            add("%s carries a password in the URL (%s): it would be a plain value in the pod spec or ConfigMap. "
                "Use the Secret reference $(REDIS_AUTH_TOKEN) (remove the override)" % (where, mask(url)))
    if v.get("celeryBrokerUrl") or v.get("celeryResultBackend"):
        add("celeryBrokerUrl/celeryResultBackend are set: the chart puts them in the pod spec before "
            "REDIS_AUTH_TOKEN, so a URL there either holds the password or has none. Remove them; the role sets "
            "CELERY_BROKER_URL after the Secret reference (extraEnvVars)")
    # Object store.
    if not v.get("s3EndpointUrl"):
        add("s3EndpointUrl is empty: boto3 and s5cmd then go to AWS S3. Run the minio stage first "
            "(minio_connection.s3_endpoint_url) or set model_engine_values.s3EndpointUrl")
    if v.get("aws"):
        add("aws is set: the chart then sets AWS_PROFILE and mounts an IRSA config (role_arn) the site does not "
            "have. Remove aws from model_engine_values (the role mounts its own AWS config: path-style, site CA)")
    if not get(v, "config.values.infra.s3_bucket"):
        add("config.values.infra.s3_bucket is empty: run the minio stage first (minio_connection.model_engine)")
    # Images.
    if get(v, "image.pullPolicy") == "Always":
        add("image.pullPolicy is Always: every pod start then needs the registry, and the chart's sample default "
            "moves with the tag. Set image.pullPolicy: IfNotPresent")
    refs = [("image.%s" % k, "%s:%s" % (get(v, "image." + k), v.get("tag")))
            for k in ("gatewayRepository", "builderRepository", "cacherRepository", "forwarderRepository")]
    refs += [("utilityImages.%s" % k, "%s:%s" % (u.get("repository"), u.get("tag")))
             for k, u in sorted((v.get("utilityImages") or {}).items())]
    for where, ref in refs:
        if not _is_site(ref, reg):
            add("%s is %s, outside the site registry %s: nodes cannot reach it. Remove the override; the role maps "
                "model_engine_images through site_image" % (where, ref, reg or "(none: run the registry stage)"))
        bad = bad_tag(ref)
        if bad:
            add("%s is %s (%s): pin a version in model_engine_images" % (where, ref, bad))
    for k in ("vllm_repository", "tensorrt_llm_repository", "batch_inference_vllm_repository", "tgi_repository",
              "lightllm_repository"):
        repo = get(v, "config.values.launch." + k) or ""
        if not _is_site(repo, reg):
            add("config.values.launch.%s is %r: model-engine resolves it against docker_repo_prefix or the vendor's "
                "ECR and endpoint pods stay INITIALIZING (seed 001). Set it in model_engine_images (the role maps it "
                "to the site registry)" % (k, repo))
    if get(v, "config.values.infra.docker_repo_prefix") != (reg.split("/", 1)[0] if reg else None):
        add("config.values.infra.docker_repo_prefix is %r, not the site registry %s. Remove the override"
            % (get(v, "config.values.infra.docker_repo_prefix"), reg or "(none)"))
    for fw, tag in sorted((v.get("inferenceFramework") or {}).items()):
        if not tag or tag == "latest":
            add("inferenceFramework.%s is %r: model-engine pulls <repository>:%s, which moves and which no bundle "
                "can pin. Set model_engine_images.frameworks.%s to a pinned tag (or leave it empty: not offered)"
                % (fw, tag, tag or "latest", fw))
    # Off at a site with no internet.
    if get(v, "datadog.enabled") or v.get("dd_trace_enabled") or get(v, "config.values.launch.dd_trace_enabled"):
        add("Datadog is on (datadog.enabled=%s, dd_trace_enabled=%s, config.values.launch.dd_trace_enabled=%s): "
            "there is no Datadog agent at the site and the two toggles must agree (seed 001). Set all three to false"
            % (get(v, "datadog.enabled"), v.get("dd_trace_enabled"), get(v, "config.values.launch.dd_trace_enabled")))
    if get(v, "virtualservice.enabled") or get(v, "destinationrule.enabled") or get(v, "config.values.launch.istio_enabled"):
        add("Istio is on (virtualservice.enabled=%s, destinationrule.enabled=%s, config.values.launch.istio_enabled=%s): "
            "the site has no Istio. Set all three to false"
            % (get(v, "virtualservice.enabled"), get(v, "destinationrule.enabled"),
               get(v, "config.values.launch.istio_enabled")))
    if v.get("azure"):
        add("azure is set: the chart then renders Azure workload identity and Service Bus settings. Remove it")
    if get(v, "autoscaling.prewarming.enabled"):
        add("autoscaling.prewarming.enabled is true: the chart's proportional autoscalers pull "
            "registry.k8s.io/cpa/cluster-proportional-autoscaler, hard-coded, not from the site registry. "
            "Set autoscaling.prewarming.enabled: false")
    if get(v, "celery_autoscaler.enabled"):
        add("celery_autoscaler.enabled is true: its StatefulSet has imagePullPolicy: Always hard-coded and no "
            "Redis host or credential (templates/celery_autoscaler_stateful_set.yaml). Set celery_autoscaler.enabled: false")
    if get(v, "autoscaling.horizontal.enabled"):
        add("autoscaling.horizontal.enabled is true: the gateway HPA reads the Pods metric request-concurrency-average, "
            "which needs a custom-metrics adapter the site does not have. Set it to false and size replicaCount.gateway")
    if get(v, "autoscaling.vertical.enabled"):
        add("autoscaling.vertical.enabled is true: that needs the VPA CRDs and operator. Set it to false")
    if get(v, "spellbook.enabled"):
        add("spellbook.enabled is true: Scale-internal. Set spellbook.enabled: false")
    if get(v, "config.values.launch.sensitive_log_mode") is not True:
        add("config.values.launch.sensitive_log_mode is %r: request and response payloads get logged. Set it to true"
            % get(v, "config.values.launch.sensitive_log_mode"))
    # KEDA scale-to-zero needs Prometheus (seed 001: silently broken).
    if s.get("scale_to_zero") and not get(v, "config.values.infra.prometheus_server_address"):
        add("model_engine_scale_to_zero is true (endpoints with min_workers: 0) but "
            "config.values.infra.prometheus_server_address is empty: KEDA's prometheus trigger has no server and "
            "an endpoint at zero never wakes up (seed 001: silently broken). Set model_engine_prometheus_address, "
            "or model_engine_scale_to_zero: false (endpoints then keep min_workers >= 1)")
    # Placement.
    for key in ("nodeSelector", "balloonNodeSelector"):
        sel = v.get(key) or {}
        if sel.get("node-lifecycle") == "normal" and "node-lifecycle" not in (s.get("node_selector") or {}):
            add("%s has node-lifecycle: normal (the chart's EKS default): no site node has that label, so the "
                "pods stay Pending. Set model_engine_node_selector (an empty map removes it)" % key)
    for i, dev in enumerate(get(v, "imageCache.devices") or []):
        acc = (dev.get("nodeSelector") or {}).get(ACCELERATOR_LABEL)
        if acc is not None and acc not in GPU_TYPES:
            add("imageCache.devices[%d] selects %s: %s, not a GpuType; use one of %s"
                % (i, ACCELERATOR_LABEL, acc, ", ".join(GPU_TYPES)))
    for i, b in enumerate(v.get("balloons") or []):
        if b.get("acceleratorName") not in GPU_TYPES + ("cpu",):
            add("balloons[%d].acceleratorName is %r, not a GpuType; use one of %s"
                % (i, b.get("acceleratorName"), ", ".join(GPU_TYPES)))
    for i, t in enumerate(get(v, "recommendedHardware.byGpuMemoryGb") or []):
        if t.get("gpu_type") not in GPU_TYPES:
            add("recommendedHardware.byGpuMemoryGb[%d].gpu_type is %r, not a GpuType" % (i, t.get("gpu_type")))
    ns = get(v, "config.values.launch.endpoint_namespace")
    if not ns:
        add("config.values.launch.endpoint_namespace is empty: set model_engine_endpoint_namespace")
    elif ns == s.get("namespace"):
        add("model_engine_endpoint_namespace is %s, the release namespace: the chart then renders its service "
            "ConfigMap twice in one namespace and helm install fails. Use another namespace" % ns)
    st = v.get("serviceTemplate") or {}
    # A key set to null is removed by Helm's merge, as it is here.
    if st.get("createServiceAccount") and not [k for k, x in (st.get("serviceAccountAnnotations") or {}).items()
                                               if x is not None]:
        add("serviceTemplate.serviceAccountAnnotations is empty: the chart then creates no ServiceAccount %s in the "
            "endpoint namespace (templates/service_account_inference.yaml) and every endpoint pod is refused. "
            "Give it at least one annotation" % st.get("serviceAccountName"))
    psc = v.get("podSecurityContext") or {}
    csc = v.get("containerSecurityContext") or {}
    if psc.get("runAsNonRoot") is not True:
        add("podSecurityContext.runAsNonRoot is %r: seed 001 recommends true for production. Set "
            "model_engine_pod_security_context.runAsNonRoot: true" % psc.get("runAsNonRoot"))
    if csc.get("allowPrivilegeEscalation") is not False or "ALL" not in [
            str(c).upper() for c in get(csc, "capabilities.drop", []) or []]:
        add("containerSecurityContext must set allowPrivilegeEscalation: false and capabilities.drop: [ALL] "
            "(seed 001). Set model_engine_container_security_context")
    return p


def compute(s):
    """Values, problems, the images and the node labels for settings ``s``."""
    problems = []
    entries, gpu_problems = gpu_inventory(s.get("gpu_nodes") or [], s.get("gpu_types") or {})
    problems += gpu_problems
    s = dict(s, _gpu_entries=entries)
    try:
        images = wanted_images(s.get("images"), s.get("site_registry") or "")
        values = build_values(s)
    except OnpremError as e:
        return dict(values={}, problems=problems + ["model_engine_images: %s" % e], images=[], node_labels=[])
    values = merge(values, s.get("values") or {})
    problems += check_values(values, s)
    labels = [dict(node=e["node"], labels={ACCELERATOR_LABEL: e["gpu_type"]}, product=e["product"]) for e in entries]
    return dict(values=values, problems=problems, images=images, node_labels=labels, site_hosts=site_hosts(s))


def site_hosts(s):
    """The site's own host names (its services, its registry, its DNS domain): not public, whatever their suffix."""
    hosts = [host_of(get(s, "object_store.s3_endpoint_url")), str(get(s, "redis.host") or "").lower(),
             str(get(s, "postgres.host") or "").lower(), host_of(s.get("site_registry")),
             host_of(s.get("prometheus_address")), str(s.get("dns_host_domain") or "").lower()]
    return sorted(set(h for h in hosts if h))


# ---------------------------------------------------------------------------------------------
# The rendered objects


def is_istio(doc):
    api = str(doc.get("apiVersion", ""))
    group = api.rsplit("/", 1)[0] if "/" in api else ""
    return any(group == g or group.endswith("." + g) for g in ISTIO_GROUPS)


def _pod_specs(doc):
    spec = doc.get("spec") or {}
    if doc.get("kind") == "Pod":
        return [spec]
    if doc.get("kind") == "CronJob":
        return [get(spec, "jobTemplate.spec.template.spec", {}) or {}]
    tpl = get(spec, "template.spec")
    return [tpl] if isinstance(tpl, dict) else []


def _who(doc):
    return "%s %s/%s" % (doc.get("apiVersion"), doc.get("kind"), get(doc, "metadata.name", "?"))


def objects_report(docs, tag, registry, namespaces=(), hosts=()):
    """What the rendered objects name: images (with where), pull policies, Secret references,
    public URLs and Istio objects. ``tag`` fills ${GIT_TAG} in the endpoint templates."""
    images, always, secrets, urls, istio = [], [], [], [], []
    for d in docs:
        if not isinstance(d, dict) or not d:
            continue
        who = _who(d)
        if is_istio(d):
            istio.append(who)
        for spec in _pod_specs(d):
            for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
                images.append(dict(image=c.get("image", ""), where="%s container %s" % (who, c.get("name"))))
                if c.get("imagePullPolicy") == "Always":
                    always.append("%s container %s" % (who, c.get("name")))
                for e in c.get("env") or []:
                    ref = get(e, "valueFrom.secretKeyRef")
                    if ref:
                        secrets.append(dict(name=ref.get("name"), key=ref.get("key"), where=who,
                                            namespace=get(d, "metadata.namespace")))
                for ef in c.get("envFrom") or []:
                    if ef.get("secretRef"):
                        secrets.append(dict(name=ef["secretRef"].get("name"), key=None, where=who,
                                            namespace=get(d, "metadata.namespace")))
            for vol in spec.get("volumes") or []:
                if vol.get("secret"):
                    secrets.append(dict(name=vol["secret"].get("secretName"), key=None, where=who,
                                        namespace=get(d, "metadata.namespace")))
        if d.get("kind") == "ConfigMap":
            for key, text in (d.get("data") or {}).items():
                text = str(text)
                for m in _IMAGE_LINE.finditer(text):
                    ref = m.group(1).replace("${GIT_TAG}", str(tag))
                    if ref.startswith("${"):
                        continue  # the endpoint's own image, chosen at run time from the settings above
                    images.append(dict(image=ref, where="%s data %s" % (who, key)))
                if "imagePullPolicy: Always" in text:
                    always.append("%s data %s" % (who, key))
        for where, url in urls_in(d):
            if public_host(host_of(url), namespaces, hosts):
                urls.append("%s: %s (%s)" % (who, mask(url), where))
    return dict(images=images, pull_always=always, secrets=secrets, public_urls=urls, istio=istio)


def references(docs, release_namespace):
    """The Secrets and ConfigMaps the rendered pods read (env, envFrom, volumes, image pull Secrets), with the key
    when one is named, except the ones the chart renders itself (the install creates those) and the optional ones:
    [{kind, name, key, namespace, where}], sorted and without repeats. What helm renders without a namespace lands
    in ``release_namespace``."""
    own = set((d.get("kind"), get(d, "metadata.namespace") or release_namespace, get(d, "metadata.name"))
              for d in docs if isinstance(d, dict) and d.get("kind") in ("Secret", "ConfigMap"))
    out = {}

    def add(kind, ref, key, doc, name_field="name"):
        name = (ref or {}).get(name_field)
        if not name or (ref or {}).get("optional"):
            return
        ns = get(doc, "metadata.namespace") or release_namespace
        if (kind, ns, name) in own:
            return
        out.setdefault((kind, ns, name, key or ""), _who(doc))

    for d in docs:
        if not isinstance(d, dict) or not d:
            continue
        for spec in _pod_specs(d):
            for ps in spec.get("imagePullSecrets") or []:
                add("Secret", ps, None, d)
            for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
                for e in c.get("env") or []:
                    add("Secret", get(e, "valueFrom.secretKeyRef"), get(e, "valueFrom.secretKeyRef.key"), d)
                    add("ConfigMap", get(e, "valueFrom.configMapKeyRef"), get(e, "valueFrom.configMapKeyRef.key"), d)
                for ef in c.get("envFrom") or []:
                    add("Secret", ef.get("secretRef"), None, d)
                    add("ConfigMap", ef.get("configMapRef"), None, d)
            for vol in spec.get("volumes") or []:
                for kind, src, field in (("Secret", vol.get("secret"), "secretName"), ("ConfigMap", vol.get("configMap"), "name")):
                    if not src:
                        continue
                    keys = [i.get("key") for i in src.get("items") or [] if i.get("key")]
                    for key in keys or [None]:
                        add(kind, src, key, d, field)
    return [dict(kind=k, namespace=ns, name=n, key=key or None, where=w) for (k, ns, n, key), w in sorted(out.items())]


def reference_problems(refs, live, created=()):
    """The references (from references()) the cluster cannot satisfy. ``live``: the cluster's Secrets and ConfigMaps
    of the namespaces concerned (k8s_info resources: kind, metadata, and data/binaryData/stringData keys - values
    are never read); ``created``: [kind, namespace, name] the role creates itself before the install."""
    have = {}
    for r in live or []:
        key = (r.get("kind"), get(r, "metadata.namespace"), get(r, "metadata.name"))
        have[key] = set((r.get("data") or {}).keys()) | set((r.get("binaryData") or {}).keys())
    made = set(tuple(c) for c in created or ())
    problems, seen = [], set()
    for ref in refs or []:
        key = (ref["kind"], ref["namespace"], ref["name"])
        if key in made:
            continue
        if key not in have:
            if key in seen:
                continue
            seen.add(key)
            fix = ("run the cluster_secrets stage (it writes the stack's Secrets)" if ref["kind"] == "Secret"
                   else "create it, or correct the name in model_engine_values")
            problems.append("%s %s in namespace %s, which %s reads, does not exist: %s"
                            % (ref["kind"], ref["name"], ref["namespace"], ref["where"], fix))
        elif ref["key"] and ref["key"] not in have[key]:
            problems.append("%s %s in namespace %s has no key %s, which %s reads (it has: %s): correct the key the "
                            "earlier stage names, or run cluster_secrets again"
                            % (ref["kind"], ref["name"], ref["namespace"], ref["key"], ref["where"],
                               ", ".join(sorted(have[key])) or "no keys"))
    return problems


def render_problems(report, wanted, registry):
    """The rendered objects' problems: an image the role did not map, untagged or latest, pull policy
    Always, a public URL, an Istio object."""
    allowed = set(i["site"] for i in wanted)
    p = []
    for i in report["images"]:
        ref, where = i["image"], i["where"]
        if "${" in ref:
            # A run-time tag (triton's ${TRITON_COMMIT_TAG}): the repository must still be the site's.
            if not _is_site(ref, registry):
                p.append("%s names %s, outside the site registry %s" % (where, ref, registry))
            continue
        if not _is_site(ref, registry):
            p.append("%s names %s, outside the site registry %s: set it through model_engine_images"
                     % (where, ref, registry))
        elif ref not in allowed:
            p.append("%s names %s, which is not among the images the role maps (model_engine_images)" % (where, ref))
        bad = bad_tag(ref)
        if bad:
            p.append("%s names %s (%s): pin a version" % (where, ref, bad))
    for w in report["pull_always"]:
        p.append("%s has imagePullPolicy: Always" % w)
    for u in report["public_urls"]:
        p.append("public URL in %s" % u)
    for w in report["istio"]:
        p.append("Istio object %s is rendered, and the site has no Istio" % w)
    return p


def missing_images(wanted, bundle_refs):
    """The wanted images the bundle does not carry (compared as normalised upstream references)."""
    have = set()
    for r in bundle_refs or []:
        try:
            have.add(normalize_reference(r))
        except OnpremError:
            continue
    return [i for i in wanted if i["upstream"] not in have]
