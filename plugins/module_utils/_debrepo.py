# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A signed flat apt repository of a package closure, for the air-gap bundle's packages/<distro>/.

Layout of a repository directory::

    pool/<name>_<version>_<arch>.deb    the closure (':' in versions written as '%3a', as apt does)
    Packages                            apt-ftparchive index of pool/
    Release, InRelease, Release.gpg     SHA256 of Packages, signed with the archive key
    llmops-archive-keyring.gpg          the archive's public key (binary keyring, for signed-by=)
    packages.lock                       the resolved closure, one name=version per line

Everything here is pure (planning, parsing, rendering) except the small functions that take a
``run`` callable (``run(argv, cwd=None, data=None) -> (rc, stdout, stderr)``), so unit tests can
drive them without podman or gpg.

Private to this collection: the API may change without notice.
"""

from __future__ import annotations

import hashlib
import os
import re
import time

from ansible_collections.llmops.onprem.plugins.module_utils._errors import OnpremError
from ansible_collections.llmops.onprem.plugins.module_utils._files import write_atomic

POOL = "pool"
PACKAGES = "Packages"
RELEASE = "Release"
INRELEASE = "InRelease"
RELEASE_GPG = "Release.gpg"
KEYRING = "llmops-archive-keyring.gpg"
LOCK = "packages.lock"
KEY_UID = "llmops.onprem package archive"

_INST = re.compile(r"^Inst (?P<name>[a-z0-9][a-z0-9+.-]*)(?::\S+)? (?:\[[^\]]*\] )?\((?P<version>\S+) .*\[(?P<arch>[a-z0-9-]+)\]\)")
_DISTRO = re.compile(r"^(debian|ubuntu)-[0-9][0-9.]*$")
_COMPONENT = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
_PKG_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+:~-]+)?$")

# Run inside a fresh container of the target distro: refresh the indexes from the image's own apt
# sources, print the closure apt would install on such a host, and (DOWNLOAD=1) fetch it into /out.
RESOLVE_SCRIPT = r"""set -eu
export DEBIAN_FRONTEND=noninteractive
if [ -n "${COMPONENTS:-}" ]; then  # the archive areas to resolve from, in place of the image's own
  if [ -f /etc/apt/sources.list ]; then
    sed -i -E "s/^(deb[[:space:]]+[^[:space:]]+[[:space:]]+[^[:space:]]+)([[:space:]].*)?$/\1 $COMPONENTS/" /etc/apt/sources.list
  fi
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && sed -i -E "s/^Components:.*/Components: $COMPONENTS/" "$f"
  done
fi
if ! apt-get update -qq >/tmp/update.log 2>&1; then
  echo "apt-get update failed inside the container:" >&2; cat /tmp/update.log >&2; exit 3
fi
apt-get install -s --no-install-recommends -- "$@" >/tmp/simulate.log 2>&1 || {
  echo "apt cannot resolve the package list:" >&2; cat /tmp/simulate.log >&2; exit 4; }
grep '^Inst ' /tmp/simulate.log || true
if [ "${DOWNLOAD:-0}" = 1 ]; then
  mkdir -p /out/partial
  apt-get install -y -qq --download-only --no-install-recommends -o Dir::Cache::archives=/out -- "$@" >&2 || exit 5
  rm -rf /out/partial /out/lock
fi
"""


class PackagesError(OnpremError):
    """The one error type of the package repository helpers; ``details`` go into fail_json."""

    KIND = "refused"

    def __init__(self, message, **details):
        super(PackagesError, self).__init__(message)
        self.details = details


def input_problems(distro, names, components=None):
    """Reasons the inputs cannot work; an empty list when they are fine."""
    problems = []
    bad_areas = [c for c in components or [] if not _COMPONENT.match(c)]
    if bad_areas:
        problems.append("not archive area names (main, contrib, non-free, non-free-firmware, universe, ...): %s"
                        % ", ".join(bad_areas))
    if not _DISTRO.match(distro or ""):
        problems.append("distro %r is not of the form debian-12 / ubuntu-24.04" % (distro,))
    if not names:
        problems.append("names is empty: list the OS packages the site installs")
    bad = [n for n in names or [] if not _PKG_NAME.match(n)]
    if bad:
        problems.append("not Debian package names: %s" % ", ".join(bad))
    return problems


def parse_closure(simulate_output):
    """``apt-get -s install`` output -> sorted list of dicts name, version, arch, filename."""
    found = {}
    for line in simulate_output.splitlines():
        m = _INST.match(line.strip())
        if m:
            found[m.group("name")] = dict(name=m.group("name"), version=m.group("version"), arch=m.group("arch"),
                                          filename=deb_filename(m.group("name"), m.group("version"), m.group("arch")))
    return [found[k] for k in sorted(found)]


def deb_filename(name, version, arch):
    """The file name apt gives a downloaded package (an epoch's ':' becomes '%3a')."""
    return "%s_%s_%s.deb" % (name, version.replace(":", "%3a"), arch)


def render_lock(closure):
    return "".join("%s=%s\n" % (p["name"], p["version"]) for p in closure)


def render_release(distro, packages_bytes, date):
    """A Release file for a flat repository holding one uncompressed Packages index.

    ``date`` is kept from the existing Release while the index is unchanged (see release_date),
    so the same index gives the same bytes and the repository is re-signed only when its content
    changes."""
    return ("Origin: llmops.onprem\n"
            "Label: llmops.onprem %s\n"
            "Suite: llmops\n"
            "Date: %s\n"
            "Description: OS package closure of an llmops.onprem air-gap bundle (%s)\n"
            "SHA256:\n %s %16d %s\n"
            % (distro, date, distro, hashlib.sha256(packages_bytes).hexdigest(), len(packages_bytes), PACKAGES))


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def rfc2822(epoch):
    t = time.gmtime(epoch)
    return "%s, %02d %s %04d %02d:%02d:%02d UTC" % (
        _DAYS[t.tm_wday], t.tm_mday, _MONTHS[t.tm_mon - 1], t.tm_year, t.tm_hour, t.tm_min, t.tm_sec)


def release_date(existing_release, distro, packages_bytes, now):
    """The Date for a new Release: the existing one when it already describes this index, else ``now``."""
    if existing_release:
        m = re.search(r"^Date: (.+)$", existing_release.decode("utf-8", "replace"), re.M)
        if m and render_release(distro, packages_bytes, m.group(1)).encode() == existing_release:
            return m.group(1)
    return rfc2822(now)


def plan_pool(closure, present):
    """Which pool files to fetch and which to remove. ``present``: file names now in pool/."""
    wanted = set(p["filename"] for p in closure)
    return dict(missing=sorted(wanted - set(present)), stale=sorted(set(present) - wanted))


def list_pool(dest):
    pool = os.path.join(dest, POOL)
    if not os.path.isdir(pool):
        return []
    return sorted(f for f in os.listdir(pool) if f.endswith(".deb"))


def read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except (IOError, OSError):
        return None


def write_if_changed(path, data, mode=0o644):
    """Atomically write ``data`` (bytes) when the file's content differs. Returns True when written."""
    if read_bytes(path) == data:
        return False
    write_atomic(path, data, mode=mode)
    return True


def podman_resolve_argv(podman, image, names, pool=None, network=None, components=None):
    """argv of the container run that resolves (and, with ``pool``, downloads) the closure; ``components``
    (archive areas) replace the ones the image's apt sources name."""
    argv = [podman, "run", "--rm", "-i"]
    if network:
        argv += ["--network", network]
    if components:
        argv += ["-e", "COMPONENTS=%s" % " ".join(components)]
    if pool:
        argv += ["-e", "DOWNLOAD=1", "-v", "%s:/out" % pool]
    return argv + ["--entrypoint", "/bin/sh", image, "-c", RESOLVE_SCRIPT, "resolve"] + list(names)


def gpg_argv(homedir, *args):
    return ["gpg", "--homedir", homedir, "--batch", "--no-tty", "--quiet"] + list(args)


def key_fingerprint(run, homedir):
    """Fingerprint of the archive signing key in ``homedir``, or None when there is none."""
    if not os.path.isdir(homedir):
        return None
    rc, out, err = run(gpg_argv(homedir, "--with-colons", "--list-secret-keys", KEY_UID))
    if rc != 0:
        return None
    for line in out.splitlines():
        if line.startswith("fpr:"):
            return line.split(":")[9]
    return None


def generate_key(run, homedir):
    """Make an Ed25519 signing key (no passphrase: the key dir is 0700, its files 0600)."""
    for path in (os.path.dirname(homedir), homedir):
        if not os.path.isdir(path):
            os.makedirs(path, 0o700)
        os.chmod(path, 0o700)
    rc, out, err = run(gpg_argv(homedir, "--pinentry-mode", "loopback", "--passphrase", "",
                                "--quick-gen-key", KEY_UID, "ed25519", "sign", "never"))
    if rc != 0:
        raise PackagesError("gpg could not create the archive signing key in %s: %s" % (homedir, err.strip()),
                            stderr=err)
    fpr = key_fingerprint(run, homedir)
    if not fpr:
        raise PackagesError("gpg made a key in %s but does not list it" % homedir)
    return fpr


def export_key(run, homedir, fpr):
    rc, out, err = run(gpg_argv(homedir, "--export", fpr), binary=True)
    if rc != 0 or not out:
        raise PackagesError("gpg could not export the public key %s: %s" % (fpr, err.strip()))
    return out


def signatures_valid(run, dest):
    """Whether InRelease and Release.gpg verify against the repository's own keyring."""
    keyring = os.path.join(dest, KEYRING)
    for argv in (["gpgv", "--keyring", keyring, os.path.join(dest, INRELEASE)],
                 ["gpgv", "--keyring", keyring, os.path.join(dest, RELEASE_GPG), os.path.join(dest, RELEASE)]):
        if not all(os.path.exists(a) for a in argv[3:]) or not os.path.exists(keyring):
            return False
        rc, out, err = run(argv)
        if rc != 0:
            return False
    return True


def sign_release(run, homedir, fpr, dest):
    release = os.path.join(dest, RELEASE)
    for args, target in ((["--clearsign"], INRELEASE), (["--detach-sign", "--armor"], RELEASE_GPG)):
        tmp = os.path.join(dest, ".%s.tmp" % target)
        rc, out, err = run(gpg_argv(homedir, "--yes", "--local-user", fpr, "--digest-algo", "SHA512",
                                    "--output", tmp, *args) + [release])
        if rc != 0:
            raise PackagesError("gpg could not sign %s: %s" % (release, err.strip()), stderr=err)
        os.chmod(tmp, 0o644)
        os.rename(tmp, os.path.join(dest, target))


def stop_agent(run, homedir):
    """gpg starts an agent per home directory; stop it so no process outlives the run."""
    if os.path.isdir(homedir):
        run(["gpgconf", "--homedir", homedir, "--kill", "gpg-agent"])


def sort_packages_index(text):
    """apt-ftparchive lists pool/ in directory order; sort the stanzas so the index is reproducible."""
    stanzas = [s.strip("\n") for s in re.split(r"\n\s*\n", text) if s.strip()]

    def key(stanza):
        fields = dict(re.findall(r"^(Package|Version|Filename): (.*)$", stanza, re.M))
        return (fields.get("Package", ""), fields.get("Version", ""), fields.get("Filename", ""))

    return "".join(s + "\n\n" for s in sorted(stanzas, key=key))


def packages_index(run, dest):
    """The Packages index of dest/pool, as bytes (empty when the pool is empty)."""
    if not list_pool(dest):
        return b""
    rc, out, err = run(["apt-ftparchive", "packages", POOL], cwd=dest)
    if rc != 0:
        raise PackagesError("apt-ftparchive could not index %s: %s" % (os.path.join(dest, POOL), err.strip()),
                            stderr=err)
    return sort_packages_index(out).encode("utf-8")
