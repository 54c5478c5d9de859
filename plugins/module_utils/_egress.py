# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The egress audit: what a rendered manifest would make a node or a pod reach outside the site.

One set of rules for everything the collection applies or installs (the serving chart, model-engine,
the GPU operator's chart and ClusterPolicy, the pull-check pods): an image outside the site registry,
an untagged or ``latest`` image, ``imagePullPolicy: Always``, a URL to a host that is not the site's,
an image the bundle does not carry. Each finding names the object and the field. An exception is
declared (rule, object, field, reason) and reported, never silent.

Private to this collection: the API may change without notice.
"""

from __future__ import annotations

import re

from ansible_collections.llmops.onprem.plugins.module_utils._oci import (
    OnpremError, parse_reference, site_reference)

RULES = ("outside-registry", "unpinned", "pull-always", "public-url", "not-in-bundle")

URL = re.compile(r"\b(?:https?|rediss?|s3|postgresql|grpcs?|wss?|ftp)://[^\s\"'<>]+", re.I)
_CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
_PRIVATE_SUFFIXES = (".svc", ".local", ".internal", ".cluster.local", ".lan", ".home.arpa", ".localdomain")
_REF_ANNOTATION = "org.opencontainers.image.ref.name"


def mask(url):
    """``url`` with a password in it replaced by ``***``."""
    return re.sub(r"(://[^/@:]*:)[^@/]+@", r"\1***@", url)


def host_of(url):
    """The host of a URL or of ``host[:port][/path]`` (lowercase, no port, no brackets)."""
    rest = re.sub(r"^[a-z0-9+.-]+://", "", str(url or ""), flags=re.I).split("/", 1)[0].split("@")[-1]
    if rest.startswith("["):
        return rest[1:].split("]", 1)[0].lower()
    return rest.rsplit(":", 1)[0].lower() if rest.count(":") == 1 else rest.lower()


def public_host(host, namespaces=(), hosts=()):
    """Whether ``host`` would be resolved outside the site: not a cluster name (<service>.<namespace>,
    *.svc, *.cluster.local), not a private or loopback address, not a site-internal suffix, not one
    of the site's own ``hosts`` (or a name under one of them)."""
    host = str(host or "").lower().strip("[]").rstrip(".")
    if not host or "$" in host or "{" in host:
        return False
    if any(host == h or host.endswith("." + h) for h in (str(x).lower() for x in hosts if x)):
        return False
    if ":" in host:  # an IPv6 address
        return not (host == "::1" or host.startswith(("fc", "fd", "fe80")))
    if "." not in host or host.split(".", 1)[1] in namespaces:
        return False
    if host == "localhost" or host.endswith(_PRIVATE_SUFFIXES):
        return False
    if re.match(r"^\d+\.\d+\.\d+\.\d+$", host):
        a, b = [int(x) for x in host.split(".")[:2]]
        return not (a in (0, 10, 127) or (a == 172 and 16 <= b <= 31) or (a == 192 and b == 168)
                    or (a == 169 and b == 254) or (a == 100 and 64 <= b <= 127))
    return True


def urls_in(value, path=""):
    """``(field, url)`` for every URL in the strings under ``value``; a ``#`` comment in an embedded
    script or template (a link to an upstream issue) is not a place anything connects to."""
    out = []
    if isinstance(value, dict):
        for k, x in value.items():
            out += urls_in(x, "%s.%s" % (path, k) if path else str(k))
    elif isinstance(value, list):
        for i, x in enumerate(value):
            name = x.get("name") if isinstance(x, dict) and isinstance(x.get("name"), str) else i
            out += urls_in(x, "%s[%s]" % (path, name))
    elif isinstance(value, str):
        text = "\n".join(re.sub(r"(^|\s)#.*$", "", ln) for ln in value.splitlines())
        for m in URL.finditer(text):
            out.append((path, m.group(0).rstrip(".,;)")))
    return out


def bad_tag(ref):
    """``untagged``, ``latest`` or ``unparsable`` for a reference that does not pin a version; None
    when it does (a digest pins it whatever its tag)."""
    try:
        p = parse_reference(ref)
    except OnpremError:
        return "unparsable"
    if p["digest"]:
        return None
    if not p["tag"]:
        return "untagged"
    if p["tag"] == "latest":
        return "latest"
    return None


def who(doc):
    """``Kind namespace/name`` of a rendered object."""
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    name = meta.get("name") or "?"
    return "%s %s/%s" % (doc.get("kind") or "?", meta["namespace"], name) if meta.get("namespace") \
        else "%s %s" % (doc.get("kind") or "?", name)


def _images_in(value, path="", in_containers=False):
    """``(field, reference)`` for every image named under ``value``: a container's ``image`` and a
    custom resource's ``{repository, image, version}`` (the GPU operator's ClusterPolicy), a
    container's ``*_IMAGE`` variables."""
    out = []
    if isinstance(value, dict):
        if in_containers and isinstance(value.get("image"), str):
            out.append(("%s.image" % path, value["image"]))
        if in_containers:
            # An operator's *_IMAGE variables name the images it starts at run time.
            for e in value.get("env") or []:
                if isinstance(e, dict) and str(e.get("name", "")).endswith("_IMAGE") and isinstance(e.get("value"), str) \
                        and e["value"]:
                    out.append(("%s.env[%s].value" % (path, e["name"]), e["value"]))
        elif all(isinstance(value.get(k), str) and value.get(k) for k in ("repository", "image")) \
                and "/" not in value["image"]:
            version = str(value.get("version") or "")
            ref = "%s/%s" % (value["repository"].rstrip("/"), value["image"])
            if version.startswith("sha256:"):
                ref += "@" + version
            elif version:
                ref += ":" + version
            out.append(("%s.{repository,image,version}" % path if path else "{repository,image,version}", ref))
        for k, x in value.items():
            sub = "%s.%s" % (path, k) if path else str(k)
            out += _images_in(x, sub, in_containers=k in _CONTAINER_LISTS)
    elif isinstance(value, list):
        for i, x in enumerate(value):
            name = x.get("name") if isinstance(x, dict) and isinstance(x.get("name"), str) else i
            out += _images_in(x, "%s[%s]" % (path, name), in_containers=in_containers)
    return out


def _pull_always_in(value, path=""):
    out = []
    if isinstance(value, dict):
        for k, x in value.items():
            sub = "%s.%s" % (path, k) if path else str(k)
            if k == "imagePullPolicy" and x == "Always":
                out.append(sub)
            else:
                out += _pull_always_in(x, sub)
    elif isinstance(value, list):
        for i, x in enumerate(value):
            name = x.get("name") if isinstance(x, dict) and isinstance(x.get("name"), str) else i
            out += _pull_always_in(x, "%s[%s]" % (path, name))
    elif isinstance(value, str) and re.search(r"^\s*-?\s*imagePullPolicy:\s*[\"']?Always\b", value, re.M):
        out.append(path)  # an embedded manifest (a ConfigMap holding a pod template)
    return out


def _registry_of(ref):
    try:
        return parse_reference(ref)["registry"].lower()
    except OnpremError:
        return None


def _key(p):
    return (p["registry"], p["repository"], p["tag"] or "", "" if p["tag"] else (p["digest"] or ""))


def bundle_refs(images):
    """The references a bundle carries, from a list (of references or ``{ref}`` dicts) or from its
    OCI layout's ``index.json`` (the reference annotations)."""
    if isinstance(images, dict):
        images = [(m.get("annotations") or {}).get(_REF_ANNOTATION) for m in images.get("manifests") or []]
    out = []
    for i in images or []:
        ref = i.get("ref") if isinstance(i, dict) else i
        if isinstance(ref, str) and ref:
            out.append(ref)
    return out


def _in_bundle(ref, registry, carried):
    """Whether ``ref`` (a site reference) is the site copy of an image the bundle carries: same
    repository and tag (or, untagged, same digest)."""
    try:
        p = parse_reference(ref)
    except OnpremError:
        return False
    if _key(p) in carried:
        return True
    return bool(p["digest"]) and (p["registry"], p["repository"], p["digest"]) in carried


def _carried(images, registry):
    keys = set()
    for ref in bundle_refs(images):
        try:
            for r in ([site_reference(ref, registry)] if registry else []) + [ref]:
                p = parse_reference(r)
                keys.add(_key(p))
                if p["digest"]:
                    keys.add((p["registry"], p["repository"], p["digest"]))
        except OnpremError:
            continue
    return keys


def _glob(pattern, text):
    """``*`` matches anything, every other character itself (``containers[engine]`` is literal)."""
    return re.fullmatch(".*".join(re.escape(p) for p in pattern.split("*")), text, re.S) is not None


def _check_exceptions(exceptions):
    out = []
    for i, e in enumerate(exceptions or []):
        if not isinstance(e, dict) or e.get("rule") not in RULES or not str(e.get("reason") or "").strip():
            raise OnpremError("egress audit exception %d must be a dict with rule (one of %s), reason (why it is "
                              "safe; it is printed) and optional object and field globs, got %r"
                              % (i, ", ".join(RULES), e), kind="input")
        out.append(dict(rule=e["rule"], object=str(e.get("object") or "*"), field=str(e.get("field") or "*"),
                        reason=str(e["reason"]).strip()))
    return out


def audit(docs, registry, bundle_images=None, hosts=(), namespaces=(), exceptions=(), extra_images=()):
    """Audit the rendered objects ``docs``.

    ``registry`` is the site registry (``host[:port][/prefix]``; empty: images are not checked
    against a registry). ``bundle_images`` is what the bundle carries (None: not checked, as on a
    site installed without a bundle). ``hosts`` are the site's own host names and ``namespaces``
    the cluster namespaces (``<service>.<namespace>`` is a cluster name). ``exceptions`` are the
    declared ones. ``extra_images`` are ``{image, object, field}`` found by a caller that knows
    more (an endpoint template in a ConfigMap).

    Returns ``images`` (each with object and field), ``findings`` (rule, object, field, value,
    message) that are problems, ``excepted`` (the same, with the declared reason) and
    ``problems`` (the findings' messages)."""
    exceptions = _check_exceptions(exceptions)
    site_host = str(registry or "").strip().split("/", 1)[0].lower()
    carried = _carried(bundle_images, registry) if bundle_images is not None else None
    images, findings, excepted = [], [], []

    def add(rule, obj, field, value, message):
        """Record a finding; True when it is a problem (no declared exception covers it)."""
        f = dict(rule=rule, object=obj, field=field, value=value, message=message)
        match = next((e for e in exceptions if e["rule"] == rule and _glob(e["object"], obj)
                      and _glob(e["field"], field)), None)
        if match:
            excepted.append(dict(f, reason=match["reason"]))
            return False
        findings.append(f)
        return True

    found = []
    for d in docs or []:
        if not isinstance(d, dict) or not d:
            continue
        obj = who(d)
        found += [dict(image=ref, object=obj, field=field) for field, ref in _images_in(d)]
        for field in _pull_always_in(d):
            add("pull-always", obj, field, "Always",
                "%s %s is imagePullPolicy: Always: every start asks a registry; use IfNotPresent" % (obj, field))
        for field, url in urls_in(d):
            if public_host(host_of(url), tuple(namespaces or ()), tuple(hosts or ())):
                add("public-url", obj, field, mask(url),
                    "%s %s names %s, a host outside the site: nothing at an air-gapped site answers there"
                    % (obj, field, mask(url)))
    found += [dict(image=i["image"], object=i.get("object", "?"), field=i.get("field", "?")) for i in extra_images or []]

    for i in found:
        ref, obj, field = i["image"], i["object"], i["field"]
        images.append(i)
        if "${" in ref:
            # Filled at run time (an endpoint template): the repository must still be the site's.
            if site_host and ref.split("/", 1)[0].lower() != site_host:
                add("outside-registry", obj, field, ref, "%s %s names %s, outside the site registry %s"
                    % (obj, field, ref, registry))
            continue
        bad = bad_tag(ref)
        if bad:
            add("unpinned", obj, field, ref, "%s %s names %s (%s): pin a version tag or a digest"
                % (obj, field, ref, bad))
        outside = False
        if site_host and _registry_of(ref) != site_host:
            outside = add("outside-registry", obj, field, ref, "%s %s names %s, outside the site registry %s: "
                          "take it from the site registry" % (obj, field, ref, registry))
        # An image refused as outside the registry needs that fix first; saying the bundle lacks it would mislead.
        if carried is not None and not outside and bad != "unparsable" and not _in_bundle(ref, registry, carried):
            add("not-in-bundle", obj, field, ref, "%s %s names %s, which the bundle does not carry: add its "
                "upstream reference to bundle_spec.images and bring a new bundle" % (obj, field, ref))
    return dict(images=images, findings=findings, excepted=excepted, problems=[f["message"] for f in findings],
                bundle_checked=carried is not None)
