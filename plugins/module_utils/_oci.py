# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to llmops.onprem; may change without notice.

OCI helpers, standard library only:

- image references: parse, normalise (docker.io short names), map to the site registry
  (one namespace per upstream registry: ``<site>/<upstream registry>/<repository>``);
- OCI image layouts: ``index.json`` names each image by its full upstream reference
  (``org.opencontainers.image.ref.name``); blobs are verified against their sha256;
- a registry client for the distribution HTTP API v2 (TLS against one CA file, Basic or
  Bearer auth, one keep-alive connection per thread): HEAD, cross-repository mount,
  chunked PATCH uploads that resume from the registry's committed offset, manifests.

Errors are one type, OnpremError, whose ``kind`` says what failed.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import threading
import time
from urllib.parse import urlencode, urlsplit, quote

from ansible_collections.llmops.onprem.plugins.module_utils import _retry
from ansible_collections.llmops.onprem.plugins.module_utils._errors import OnpremError
from ansible_collections.llmops.onprem.plugins.module_utils._files import sha256_file, write_atomic

DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = ("index.docker.io", "registry-1.docker.io", "registry.hub.docker.com")

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (MT_OCI_MANIFEST, MT_OCI_INDEX, MT_DOCKER_MANIFEST, MT_DOCKER_LIST)
INDEX_TYPES = (MT_OCI_INDEX, MT_DOCKER_LIST)
# The most a manifest, an index or a tag list may weigh here (distribution refuses manifests over 4 MiB).
MANIFEST_LIMIT = 4 << 20
REF_ANNOTATION = "org.opencontainers.image.ref.name"

# Grammar of distribution/reference (docker/distribution reference/regexp.go).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_REPOSITORY = re.compile(r"^%s(?:/%s)*$" % (_COMPONENT, _COMPONENT))
_DOMAIN = re.compile(r"^(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
                     r"(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
_SHA256 = re.compile(r"^sha256:[a-f0-9]{64}$")

# The most of a token service's answer that is read (a token is a few KiB).
TOKEN_ANSWER_MAX = 64 * 1024


# ---------------------------------------------------------------------------------------------
# References


def parse_reference(ref):
    """An image reference as a dict: registry, repository, tag, digest (None when absent).

    Short docker.io names are normalised the way docker and containerd do it:
    ``nginx:1.25`` is ``docker.io/library/nginx:1.25``.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise OnpremError("an image reference must be a non-empty string, got %r" % (ref,), kind="input")
    text = ref.strip()
    if "://" in text:
        raise OnpremError("image reference %r must not have a scheme: write host/repository:tag" % ref, kind="input")
    name, digest = text, None
    if "@" in text:
        name, digest = text.split("@", 1)
        if not _DIGEST.match(digest):
            raise OnpremError("image reference %r has an invalid digest %r (expected e.g. sha256:<64 hex>)"
                              % (ref, digest), kind="input")
        if digest.startswith("sha256:") and not _SHA256.match(digest):
            raise OnpremError("image reference %r has an invalid sha256 digest %r (64 lowercase hex digits)"
                              % (ref, digest), kind="input")
    tag = None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
        if not _TAG.match(tag):
            raise OnpremError("image reference %r has an invalid tag %r" % (ref, tag), kind="input")
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry, repository = first, rest
        if not _DOMAIN.match(registry):
            raise OnpremError("image reference %r has an invalid registry host %r" % (ref, registry), kind="input")
        if registry in _DOCKER_HUB_ALIASES:
            registry = DOCKER_HUB
    else:
        registry, repository = DOCKER_HUB, name
    if registry == DOCKER_HUB and "/" not in repository:
        repository = "library/" + repository
    if not _REPOSITORY.match(repository):
        raise OnpremError("image reference %r has an invalid repository %r (lowercase letters, digits, "
                          "separators '.', '_', '__', '-', path components joined by '/')" % (ref, repository),
                          kind="input")
    return dict(registry=registry, repository=repository, tag=tag, digest=digest)


def format_reference(registry, repository, tag=None, digest=None):
    out = "%s/%s" % (registry, repository) if registry else repository
    if tag:
        out += ":" + tag
    if digest:
        out += "@" + digest
    return out


def normalize_reference(ref):
    p = parse_reference(ref)
    return format_reference(p["registry"], p["repository"], p["tag"], p["digest"])


def check_site_registry(site):
    """A site registry is host[:port], optionally followed by a path prefix."""
    if not isinstance(site, str) or not site.strip():
        raise OnpremError("the site registry must be host[:port] (e.g. registry.site.example:5000), got %r"
                          % (site,), kind="input")
    site = site.strip().rstrip("/")
    if "://" in site:
        raise OnpremError("the site registry %r must not have a scheme: write host[:port]" % site, kind="input")
    host, _sep, prefix = site.partition("/")
    if not _DOMAIN.match(host) or (prefix and not _REPOSITORY.match(prefix)):
        raise OnpremError("the site registry %r is not host[:port][/path]" % site, kind="input")
    return site


def registry_namespace(registry):
    """The first path component that stands for an upstream registry in the site registry.

    Host names are lowercased; a port's ':' (not allowed in a repository path) becomes '_'
    (not allowed in a host name, so no two upstreams share a namespace).
    """
    if registry.startswith("["):
        raise OnpremError("an upstream registry named by an IPv6 address (%s) cannot be mapped into the site "
                          "registry; give it a host name" % registry, kind="input")
    return registry.lower().replace(":", "_")


def site_repository(parsed):
    """The repository an upstream image has in the site registry: upstream registry namespace + path."""
    return "%s/%s" % (registry_namespace(parsed["registry"]), parsed["repository"])


def site_reference(ref, site, strict=False):
    """``ref`` as it is named in the site registry ``site``; see the site_image filter."""
    p = parse_reference(ref)
    if strict:
        if not p["tag"] and not p["digest"]:
            raise OnpremError("image reference %r has neither a tag nor a digest; pin a version "
                              "(name:TAG or name@sha256:...)" % ref, kind="input")
        if p["tag"] == "latest" and not p["digest"]:
            raise OnpremError("image reference %r uses the tag 'latest', which moves; pin a version tag or a "
                              "digest" % ref, kind="input")
    if not site:
        return format_reference(p["registry"], p["repository"], p["tag"], p["digest"])
    site = check_site_registry(site)
    host = site.split("/", 1)[0]
    if p["registry"] == host:
        # Already a site reference: mapping it again would nest it.
        return format_reference(p["registry"], p["repository"], p["tag"], p["digest"])
    return format_reference(site, site_repository(p), p["tag"], p["digest"])


# ---------------------------------------------------------------------------------------------
# OCI image layout


class Layout(object):
    """An OCI image layout directory (read only)."""

    def __init__(self, path):
        self.path = path
        index_path = os.path.join(path, "index.json")
        if not os.path.isfile(os.path.join(path, "oci-layout")) or not os.path.isfile(index_path):
            raise OnpremError("%s is not an OCI image layout (it needs oci-layout and index.json)" % path, kind="input")
        try:
            with open(index_path, "rb") as f:
                self.index = json.loads(f.read())
        except ValueError as e:
            raise OnpremError("%s is not valid JSON: %s" % (index_path, e), kind="input")

    def blob_path(self, digest):
        if not _SHA256.match(digest or ""):
            raise OnpremError("unsupported or invalid digest %r in %s (only sha256 is supported)" % (digest, self.path),
                              kind="input")
        return os.path.join(self.path, "blobs", "sha256", digest.split(":", 1)[1])

    def images(self):
        """{full upstream reference: index descriptor} for every named image."""
        out = {}
        for d in self.index.get("manifests", []):
            name = (d.get("annotations") or {}).get(REF_ANNOTATION)
            if not name:
                continue
            out[normalize_reference(name)] = d
        return out

    def read_json_blob(self, digest, size=None):
        """A small blob (manifest, index), verified against its digest."""
        path = self.blob_path(digest)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except (IOError, OSError) as e:
            raise OnpremError("blob %s is missing from the layout %s: %s" % (digest, self.path, e), kind="input")
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != digest or (size is not None and len(data) != size):
            raise OnpremError("blob %s in %s is corrupt: its content hashes to %s (%d bytes, expected %s bytes)"
                              % (digest, self.path, actual, len(data), size), kind="corrupt")
        try:
            return data, json.loads(data)
        except ValueError as e:
            raise OnpremError("manifest %s in %s is not valid JSON: %s" % (digest, self.path, e), kind="input")

    def verify_blob(self, digest, size):
        path = self.blob_path(digest)
        try:
            actual_size = os.path.getsize(path)
        except OSError:
            raise OnpremError("blob %s is missing from the layout %s" % (digest, self.path), kind="input")
        if actual_size != size:
            raise OnpremError("blob %s in %s is corrupt: %d bytes on disk, the manifest says %d"
                              % (digest, self.path, actual_size, size), kind="corrupt")
        actual = "sha256:" + sha256_file(path)
        if actual != digest:
            raise OnpremError("blob %s in %s is corrupt: its content hashes to %s" % (digest, self.path, actual),
                              kind="corrupt")

    def image(self, ref, descriptor):
        """What pushing ``ref`` involves: manifests (children first, the named one last) and blobs."""
        manifests, blobs = [], {}

        def walk(desc, depth):
            mt = desc.get("mediaType")
            data, doc = self.read_json_blob(desc["digest"], desc.get("size"))
            mt = mt or doc.get("mediaType")
            if mt in INDEX_TYPES:
                if depth > 1:
                    raise OnpremError("image %s: nested indexes deeper than two levels are not supported" % ref,
                                      kind="input")
                for child in doc.get("manifests", []):
                    try:
                        os.stat(self.blob_path(child["digest"]))
                    except OSError:
                        raise OnpremError("image %s: its index lists manifest %s (%s) which is not in the layout %s; "
                                          "the registry would refuse the index" % (
                                              ref, child["digest"], child.get("platform"), self.path), kind="input")
                    walk(child, depth + 1)
            elif mt in (MT_OCI_MANIFEST, MT_DOCKER_MANIFEST):
                for b in [doc["config"]] + list(doc.get("layers", [])):
                    if b.get("urls"):
                        continue  # non-distributable layer, fetched from its URLs
                    blobs[b["digest"]] = int(b["size"])
            else:
                raise OnpremError("image %s: unsupported manifest media type %r" % (ref, mt), kind="input")
            manifests.append(dict(digest=desc["digest"], media_type=mt, data=data))

        walk(descriptor, 0)
        return dict(manifests=manifests, blobs=blobs)


# ---------------------------------------------------------------------------------------------
# Registry client


class _Body(object):
    """Reads ``length`` bytes of a file from ``offset``; counts them for progress."""

    def __init__(self, f, offset, length, on_bytes=None):
        self.f, self.left, self.on_bytes = f, length, on_bytes
        f.seek(offset)

    def read(self, n=-1):
        if self.left <= 0:
            return b""
        if n is None or n < 0 or n > self.left:
            n = self.left
        b = self.f.read(n)
        if not b:
            raise OnpremError("the layout file ended early (truncated while pushing?)", kind="corrupt")
        self.left -= len(b)
        if self.on_bytes:
            self.on_bytes(len(b))
        return b


def _error_text(body):
    try:
        doc = json.loads(body.decode("utf-8", "replace"))
        errs = doc.get("errors") or []
        return "; ".join("%s: %s" % (e.get("code"), e.get("message")) for e in errs) or body[:300].decode("utf-8", "replace")
    except (ValueError, AttributeError):
        return body[:300].decode("utf-8", "replace") if isinstance(body, bytes) else str(body)


def _error_code(body):
    try:
        return (json.loads(body.decode("utf-8", "replace")).get("errors") or [{}])[0].get("code")
    except (ValueError, AttributeError, IndexError):
        return None


def origin(netloc):
    """(host lowercased, port) of an https netloc; the port defaults to 443."""
    m = re.match(r"^(\[[^\]]+\]|[^:/]+)(?::(\d+))?$", netloc or "")
    if not m:
        return (netloc or "").lower(), None
    return m.group(1).lower(), int(m.group(2)) if m.group(2) else 443


def _parse_challenge(value):
    scheme, _sep, rest = (value or "").strip().partition(" ")
    params = dict((k.lower(), v) for k, v in re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


class Registry(object):
    """A distribution (registry HTTP API v2) endpoint at https://<host>."""

    def __init__(self, host, username=None, password=None, ca_path=None, validate_certs=True,
                 timeout=300, retries=3, blocksize=1 << 20):
        self.host = host
        self.netloc = host.split("/", 1)[0]
        # The only origin the credentials go to (https, this host and port).
        self.origin = origin(self.netloc)
        self.username, self.password = username or None, password or None
        self.timeout, self.retries, self.blocksize = timeout, retries, blocksize
        if validate_certs:
            try:
                self.ctx = ssl.create_default_context(cafile=ca_path or None)
            except (IOError, OSError, ssl.SSLError) as e:
                raise OnpremError("cannot read the CA file %s: %s" % (ca_path, e), kind="input")
        else:
            self.ctx = ssl.create_default_context()
            self.ctx.check_hostname = False
            self.ctx.verify_mode = ssl.CERT_NONE
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sleep = time.sleep
        self._auth = None          # header value once known
        self._bearer = None        # challenge params when the registry wants tokens
        self._token_expiry = 0.0
        self._scopes = []

    # -- connections ---------------------------------------------------------------------
    def _conn(self, netloc):
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        c = conns.get(netloc)
        if c is None:
            host, port = netloc, None
            m = re.match(r"^(\[[^\]]+\]|[^:]+)(?::(\d+))?$", netloc)
            if m:
                host, port = m.group(1).strip("[]"), int(m.group(2)) if m.group(2) else None
            c = http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self.ctx,
                                            blocksize=self.blocksize)
            conns[netloc] = c
        return c

    def _drop(self, netloc):
        c = getattr(self._local, "conns", {}).pop(netloc, None)
        if c is not None:
            c.close()

    def close(self):
        for netloc in list(getattr(self._local, "conns", {})):
            self._drop(netloc)

    def owns(self, url):
        """True when ``url`` (a Location, a resume record) is on this registry's own origin: a path, or
        https://<the registry's host and port>/..."""
        if not isinstance(url, str) or not url:
            return False
        if url.startswith("/") and not url.startswith("//"):
            return True
        u = urlsplit(url)
        return u.scheme == "https" and origin(u.netloc) == self.origin

    def _target(self, url):
        if url.startswith("/") and not url.startswith("//"):
            return self.netloc, url
        u = urlsplit(url)
        if u.scheme != "https":
            raise OnpremError("the registry sent a non-HTTPS location %r" % url, kind="protocol")
        if origin(u.netloc) != self.origin:
            # Uploads stay on the registry, and the push credentials go to no other host.
            raise OnpremError("the registry %s sent a Location on another host (%s): refused, the push credentials "
                              "are sent only to https://%s. A registry behind a proxy or load balancer must answer "
                              "with its own address (check the proxy's Host forwarding, or the registry's http.host "
                              "setting)" % (self.host, url.split("?", 1)[0], self.netloc), kind="protocol")
        return u.netloc, u.path + ("?" + u.query if u.query else "")

    def _send(self, method, url, headers, body, limit=None):
        netloc, path = self._target(url)
        c = self._conn(netloc)
        try:
            c.request(method, path, body=body, headers=headers)
            r = c.getresponse()
            data = r.read() if limit is None else r.read(limit + 1)
            if limit is not None and len(data) > limit:
                self._drop(netloc)
                raise OnpremError("%s %s on %s: the answer is larger than the %d bytes a manifest may have; refused"
                                  % (method, path.split("?", 1)[0], self.host, limit), kind="protocol")
        except ssl.SSLCertVerificationError as e:
            self._drop(netloc)
            raise OnpremError("TLS verification of https://%s failed: %s; give the site CA (ca_path) that signed "
                              "the registry's certificate" % (netloc, e.verify_message or e), kind="tls")
        except ssl.SSLError as e:
            self._drop(netloc)
            raise OnpremError("TLS handshake with https://%s failed: %s" % (netloc, e), kind="tls")
        except (socket.timeout, ConnectionError, http.client.HTTPException, OSError) as e:
            self._drop(netloc)
            raise OnpremError("cannot talk to https://%s: %s" % (netloc, e), kind="unreachable") from e
        if r.getheader("connection", "").lower() == "close":
            self._drop(netloc)
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data

    def request(self, method, url, headers=None, body=None, ok=(200,), retry=True, limit=None):
        """One request with auth. With ``retry``, a transient failure of an idempotent request (GET, HEAD, PUT,
        DELETE) is tried again (module_utils/_retry.py); a POST never is: the registry may have opened an upload
        session or mounted a blob before its answer was lost. The body must be bytes."""
        tries = _retry.Retry(method, self.retries if retry else 1, sleep=self._sleep)
        renewed = False
        while True:
            h = dict(headers or {})
            auth = self._auth_header()
            if auth:
                h["Authorization"] = auth
            try:
                status, rh, data = self._send(method, url, h, body, limit)
            except OnpremError as e:
                if e.kind != "protocol" and tries.again(exc=e):
                    continue
                raise
            if status == 401 and self._bearer is not None and not renewed:
                # The token expired: a 401 is a refusal (nothing was done), so any request is sent once more.
                renewed, self._token_expiry = True, 0.0
                continue
            if status not in ok and tries.again(status=status):
                continue
            if status not in ok:
                self._raise(method, url, status, data)
            return status, rh, data

    def _raise(self, method, url, status, data):
        path = self._target(url)[1].split("?", 1)[0]
        if status == 401:
            raise OnpremError("the registry %s refused the credentials of user %r (HTTP 401 on %s %s): check the user "
                              "name and password" % (self.host, self.username, method, path), kind="auth", status=401,
                              code=_error_code(data))
        if status == 403:
            raise OnpremError("the registry %s denied %s %s to user %r (HTTP 403): the user may not push"
                              % (self.host, method, path, self.username), kind="auth", status=403, code=_error_code(data))
        raise OnpremError("%s %s on %s: HTTP %d %s" % (method, path, self.host, status, _error_text(data)),
                          status=status, code=_error_code(data))

    # -- auth ----------------------------------------------------------------------------
    def _auth_header(self):
        if self._bearer is None:
            return self._auth
        with self._lock:
            if time.time() >= self._token_expiry:
                self._fetch_token()
            return self._auth

    def _basic(self):
        return "Basic " + base64.b64encode(("%s:%s" % (self.username, self.password)).encode()).decode()

    def _fetch_token(self):
        realm = self._bearer.get("realm")
        if not realm:
            raise OnpremError("the registry %s asks for a bearer token but names no realm" % self.host, kind="protocol")
        query = [("service", self._bearer["service"])] if self._bearer.get("service") else []
        query += [("scope", s) for s in self._scopes]
        url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        u = urlsplit(url)
        headers = {"Authorization": self._basic()} if self.username else {}
        if u.scheme != "https":
            raise OnpremError("the registry %s names a token service that is not HTTPS (%s): refused, the credentials "
                              "would travel in clear" % (self.host, realm), kind="protocol")
        c = http.client.HTTPSConnection(u.hostname, u.port, timeout=self.timeout, context=self.ctx)
        try:
            c.request("GET", u.path + "?" + u.query, headers=headers)
            r = c.getresponse()
            data = r.read(TOKEN_ANSWER_MAX + 1)
        except (OSError, http.client.HTTPException) as e:
            raise OnpremError("cannot get a token from %s: %s" % (realm, e), kind="unreachable")
        finally:
            c.close()
        if r.status in (401, 403):
            raise OnpremError("the token service %s refused the credentials of user %r (HTTP %d): check the user "
                              "name and password" % (realm, self.username, r.status), kind="auth", status=r.status)
        if r.status != 200:
            raise OnpremError("the token service %s answered HTTP %d" % (realm, r.status), status=r.status)
        token, expires = None, 60
        try:
            doc = json.loads(data[:TOKEN_ANSWER_MAX].decode("utf-8"))
            if isinstance(doc, dict):
                token = doc.get("token") or doc.get("access_token")
                expires = int(doc.get("expires_in") or 60)
        except (ValueError, TypeError, UnicodeDecodeError):
            token = None
        if not isinstance(token, str) or not token or len(data) > TOKEN_ANSWER_MAX:
            shown = data[:200].decode("utf-8", "replace").replace("\n", " ").strip()
            raise OnpremError("the token service %s (named by the registry %s) answered HTTP %d with %s instead of a "
                              "JSON object with a \"token\" or \"access_token\": %r%s. Check that the registry's "
                              "auth.token.realm points at its token service" % (
                                  realm, self.host, r.status, r.getheader("content-type") or "no content type", shown,
                                  " (truncated)" if len(data) > 200 else ""), kind="protocol")
        self._auth = "Bearer " + token
        self._token_expiry = time.time() + max(30, expires * 0.8)

    def answers(self):
        """True when something answers https://<registry>/v2/ (any HTTP status; no credentials are sent), False when
        the registry cannot be reached at all (no such host, nothing listening). A TLS failure is an error."""
        try:
            self._send("GET", "/v2/", {}, None)
        except OnpremError as e:
            if e.kind == "unreachable":
                return False
            raise
        return True

    def login(self, repositories=()):
        """Check that the registry answers and accepts the credentials (GET /v2/)."""
        self._scopes = ["repository:%s:pull,push" % r for r in sorted(set(repositories))]
        status, headers, data = self._send("GET", "/v2/", {}, None)
        if status == 200:
            return
        if status != 401:
            raise OnpremError("GET /v2/ on %s: HTTP %d %s (is this a registry?)" % (self.host, status, _error_text(data)),
                              status=status)
        scheme, params = _parse_challenge(headers.get("www-authenticate"))
        if not self.username:
            raise OnpremError("the registry %s needs credentials (HTTP 401, %s); set username and password"
                              % (self.host, scheme or "no challenge"), kind="auth", status=401)
        if scheme == "basic":
            self._auth = self._basic()
        elif scheme == "bearer":
            self._bearer = params
        else:
            raise OnpremError("the registry %s asks for an unsupported auth scheme %r" % (self.host, scheme),
                              kind="protocol")
        status, headers, data = self._send("GET", "/v2/", {"Authorization": self._auth_header()}, None)
        if status != 200:
            self._raise("GET", "/v2/", status, data)

    # -- API -----------------------------------------------------------------------------
    @staticmethod
    def _repo(repository):
        return quote(repository, safe="/")

    def manifest_digest(self, repository, reference):
        """The digest the registry serves for repository:reference, or None."""
        status, h, _data = self.request("HEAD", "/v2/%s/manifests/%s" % (self._repo(repository), reference),
                                        headers={"Accept": ", ".join(MANIFEST_TYPES)}, ok=(200, 404))
        return h.get("docker-content-digest") if status == 200 else None

    def blob_exists(self, repository, digest):
        status, _h, _d = self.request("HEAD", "/v2/%s/blobs/%s" % (self._repo(repository), digest), ok=(200, 404))
        return status == 200

    def mount(self, repository, digest, source):
        """Cross-repository mount. True when mounted; otherwise the upload it started is cancelled."""
        url = "/v2/%s/blobs/uploads/?%s" % (self._repo(repository), urlencode([("mount", digest), ("from", source)]))
        status, h, _d = self.request("POST", url, headers={"Content-Length": "0"}, body=b"", ok=(201, 202))
        if status == 201:
            return True
        if h.get("location"):
            self.request("DELETE", h["location"], ok=(204, 404), retry=False)
        return False

    def start_upload(self, repository):
        _s, h, _d = self.request("POST", "/v2/%s/blobs/uploads/" % self._repo(repository),
                                 headers={"Content-Length": "0"}, body=b"", ok=(202,))
        if not h.get("location"):
            raise OnpremError("the registry started an upload without a Location header", kind="protocol")
        self._target(h["location"])  # refused here, before it is recorded, when it names another host
        return h["location"]

    def upload_status(self, location):
        """(next offset, location) of an upload in progress, or None when the registry dropped it."""
        status, h, _d = self.request("GET", location, ok=(204, 400, 404), retry=False)
        if status != 204:
            return None
        rng = h.get("range", "")
        m = re.match(r"^(?:bytes=)?0-(\d+)$", rng)
        offset = int(m.group(1)) + 1 if m else 0
        return offset, h.get("location") or location

    def patch(self, location, f, offset, length, on_bytes=None):
        """Send bytes [offset, offset+length) of file f; returns the next location."""
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length),
                   "Content-Range": "%d-%d" % (offset, offset + length - 1)}
        auth = self._auth_header()
        if auth:
            headers["Authorization"] = auth
        status, h, data = self._send("PATCH", location, headers, _Body(f, offset, length, on_bytes))
        if status != 202:
            self._raise("PATCH", location, status, data)
        return h.get("location") or location

    def finish(self, location, digest):
        sep = "&" if "?" in location else "?"
        # The PUT of a blob by its digest: a transient failure is retried (the blob is the same whichever try lands).
        self.request("PUT", location + sep + urlencode([("digest", digest)]),
                     headers={"Content-Length": "0"}, body=b"", ok=(201,))

    def get_manifest(self, repository, reference):
        """(media type, body) of repository:reference or @digest, or None when the registry has none; the body is
        read up to MANIFEST_LIMIT bytes and, asked by digest, checked against it."""
        status, h, data = self.request("GET", "/v2/%s/manifests/%s" % (self._repo(repository), reference),
                                       headers={"Accept": ", ".join(MANIFEST_TYPES)}, ok=(200, 404), limit=MANIFEST_LIMIT)
        if status == 404:
            return None
        if reference.startswith("sha256:") and "sha256:" + hashlib.sha256(data).hexdigest() != reference:
            raise OnpremError("the registry %s answered %s@%s with a manifest of another digest: refused"
                              % (self.host, repository, reference), kind="protocol")
        return (h.get("content-type") or "").split(";", 1)[0].strip(), data

    def tags(self, repository):
        """The tags of a repository (one page of at most 10000; a registry holding more is refused)."""
        status, _h, data = self.request("GET", "/v2/%s/tags/list?n=10000" % self._repo(repository), ok=(200, 404),
                                        limit=MANIFEST_LIMIT)
        if status == 404:
            return []
        try:
            tags = json.loads(data.decode("utf-8")).get("tags") or []
        except (ValueError, UnicodeDecodeError, AttributeError):
            raise OnpremError("the registry %s answered the tag list of %s with something that is not JSON"
                              % (self.host, repository), kind="protocol")
        if len(tags) >= 10000:
            raise OnpremError("%s holds 10000 tags or more in %s: refused, this collection does not page tag lists"
                              % (self.host, repository), kind="protocol")
        return [t for t in tags if isinstance(t, str)]

    def delete_manifest(self, repository, digest):
        """Delete a manifest by digest (its tags go with it). True when it was there; a registry that does not allow
        deletes (storage.delete.enabled) is named."""
        status, _h, data = self.request("DELETE", "/v2/%s/manifests/%s" % (self._repo(repository), digest),
                                        ok=(202, 404, 405))
        if status == 405:
            raise OnpremError("the registry %s does not allow deleting manifests (HTTP 405 %s): set storage.delete.enabled "
                              "in its configuration (the registry role does)" % (self.host, _error_text(data)),
                              kind="protocol", status=405)
        return status == 202

    def put_manifest(self, repository, reference, media_type, data):
        _s, h, _d = self.request("PUT", "/v2/%s/manifests/%s" % (self._repo(repository), reference),
                                 headers={"Content-Type": media_type}, body=data, ok=(201,))
        return h.get("docker-content-digest")


# ---------------------------------------------------------------------------------------------
# Resumable uploads


class UploadState(object):
    """Upload locations and committed offsets, one small JSON file per (registry, repository, blob)."""

    def __init__(self, directory):
        self.dir = directory

    def _path(self, registry, repository, digest):
        key = hashlib.sha256(("%s/%s@%s" % (registry, repository, digest)).encode()).hexdigest()[:40]
        return os.path.join(self.dir, key + ".json")

    def load(self, registry, repository, digest):
        try:
            with open(self._path(registry, repository, digest)) as f:
                doc = json.load(f)
        except (IOError, OSError, ValueError):
            return None
        if (not isinstance(doc, dict) or doc.get("digest") != digest or doc.get("repository") != repository
                or doc.get("registry") != registry):
            return None
        return doc

    def save(self, registry, repository, digest, location, offset):
        # Blob uploads run in parallel threads: several may create the directory at once.
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        # Rewritten after every chunk: no fsync (a state lost in a crash only restarts that blob's upload).
        write_atomic(self._path(registry, repository, digest), json.dumps(dict(
            registry=registry, repository=repository, digest=digest, location=location, offset=offset,
            updated=time.time())).encode(), mode=0o600, fsync=False)

    def remove(self, registry, repository, digest):
        try:
            os.unlink(self._path(registry, repository, digest))
        except OSError:
            pass


def upload_blob(reg, state, repository, digest, size, path, chunk_size, stop, on_bytes=None):
    """Push one blob in chunks, resuming a recorded upload. Returns (bytes sent, resumed-from offset or None).

    The offset is recorded after every chunk the registry accepted. ``stop`` (a threading.Event)
    is checked between chunks: the chunk in flight completes, then OnpremError(kind=interrupted).
    """
    offset, location, resumed = 0, None, None
    rec = state.load(reg.host, repository, digest)
    if rec and not reg.owns(rec.get("location")):
        rec = None  # a record naming another host is not followed: the upload starts again on the registry
    if rec:
        got = reg.upload_status(rec["location"])
        if got is not None and 0 < got[0] <= size:
            offset, location = got
            resumed = offset
            if on_bytes:
                on_bytes(offset)  # already in the registry: counts as done for progress
    if location is None:
        location = reg.start_upload(repository)
        state.save(reg.host, repository, digest, location, 0)
    sent = 0
    with open(path, "rb") as f:
        while offset < size:
            if stop is not None and stop.is_set():
                raise OnpremError("interrupted: blob %s stopped at %d of %d bytes; the upload is kept, run again to "
                                  "resume from there" % (digest, offset, size), kind="interrupted")
            n = min(chunk_size, size - offset)
            location = reg.patch(location, f, offset, n, on_bytes)
            offset += n
            sent += n
            state.save(reg.host, repository, digest, location, offset)
    reg.finish(location, digest)
    state.remove(reg.host, repository, digest)
    return sent, resumed
