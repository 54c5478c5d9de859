# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to llmops.onprem; may change without notice.

Model checkpoints: the checkpoint manifest (schema, canonical bytes, digest), local file
listing and parallel sha256, and the Hugging Face layout checks (config.json, safetensors
headers, the shard index, tokenizer files, archives where files should be). Standard library
only, so checkpoint_verify needs nothing on the target host.

The manifest (``llmops.onprem/checkpoint-manifest/v1``)::

    {"schema": "llmops.onprem/checkpoint-manifest/v1", "name": "<model>",
     "files": [{"path": "<relative posix path>", "size": <int>, "sha256": "<hex>"}, ...]}

files sorted by path. Its canonical bytes are ``json.dumps(obj, sort_keys=True,
separators=(",", ":")).encode()``; the manifest digest is the sha256 hex of those bytes.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import stat
import struct

try:
    from ansible_collections.llmops.onprem.plugins.module_utils._errors import OnpremError
    from ansible_collections.llmops.onprem.plugins.module_utils._files import sha256_fileobj
    from ansible_collections.llmops.onprem.plugins.module_utils._paths import path_problem
except ImportError:  # in the model-pull image, _errors.py, _files.py and _paths.py lie next to this file (serving/images/build.sh)
    from _errors import OnpremError  # type: ignore[no-redef]  # pylint: disable=import-error
    from _files import sha256_fileobj  # type: ignore[no-redef]  # pylint: disable=import-error
    from _paths import path_problem  # type: ignore[no-redef]  # pylint: disable=import-error

SCHEMA = "llmops.onprem/checkpoint-manifest/v1"
# Where checkpoint_sync stores the manifest under the prefix (model-pull reads it from there).
MANIFEST_KEY = ".llmops/manifest.json"
HASH_BLOCK = 8 * 1024 * 1024
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# A safetensors header larger than this is not a header (the format's own reader caps it at 100 MB).
MAX_HEADER = 100 * 1000 * 1000
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.xz", ".tar.bz2", ".zip")
# Bytes per element of the safetensors dtypes.
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "E4M3": 1, "E5M2": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}
# Sub-byte dtypes (packed): bits per element.
DTYPE_BITS = {"F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}
# Any one of these sets is a tokenizer: fast tokenizer, sentencepiece, GPT-2 BPE, tiktoken.
TOKENIZER_SETS = (("tokenizer.json",), ("tokenizer.model",), ("vocab.json", "merges.txt"), ("tiktoken.model",))


class CheckpointError(OnpremError):
    """A checkpoint, or its manifest, is not what it should be. ``problems`` lists every finding."""

    KIND = "refused"

    def __init__(self, message, problems=None):
        super(CheckpointError, self).__init__(message)
        self.problems = list(problems or [message])

    @property
    def details(self):
        return dict(problems=self.problems)


# --- the manifest ---------------------------------------------------------------------------
def canonical_bytes(manifest):
    """The bytes the manifest digest is taken over."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def manifest_digest(manifest):
    """sha256 hex of the manifest's canonical bytes."""
    return hashlib.sha256(canonical_bytes(manifest)).hexdigest()


def build_manifest(name, files):
    """A manifest from ``files``: an iterable of dicts with path, size and sha256."""
    entries = sorted((dict(path=f["path"], size=int(f["size"]), sha256=f["sha256"]) for f in files),
                     key=lambda f: f["path"])
    manifest = {"schema": SCHEMA, "name": name, "files": entries}
    validate_manifest(manifest, "the manifest")
    return manifest


def validate_manifest(manifest, where):
    """Raise CheckpointError unless ``manifest`` follows the schema."""
    problems = []
    if not isinstance(manifest, dict):
        raise CheckpointError("%s is not a JSON object" % where)
    if manifest.get("schema") != SCHEMA:
        problems.append("schema is %r, expected %r" % (manifest.get("schema"), SCHEMA))
    if not isinstance(manifest.get("name"), str) or not manifest.get("name"):
        problems.append("name must be a non-empty string")
    files = manifest.get("files")
    if not isinstance(files, list):
        problems.append("files must be a list")
        files = []
    seen = set()
    for i, f in enumerate(files):
        if not isinstance(f, dict) or set(f) != {"path", "size", "sha256"}:
            problems.append("files[%d] must have exactly path, size and sha256" % i)
            continue
        path_problem = relative_path_problem(f["path"])
        if path_problem:
            problems.append("files[%d].path %r %s" % (i, f["path"], path_problem))
        if not isinstance(f["size"], int) or isinstance(f["size"], bool) or f["size"] < 0:
            problems.append("files[%d].size must be a non-negative integer" % i)
        if not isinstance(f["sha256"], str) or not _HEX64.match(f["sha256"]):
            problems.append("files[%d].sha256 must be 64 lowercase hex digits" % i)
        if f["path"] in seen:
            problems.append("files[%d].path %r appears twice" % (i, f["path"]))
        seen.add(f["path"])
    paths = [f.get("path") for f in files if isinstance(f, dict)]
    if not problems and paths != sorted(paths):
        problems.append("files must be sorted by path")
    if problems:
        raise CheckpointError("%s is not a valid checkpoint manifest: %s" % (where, "; ".join(problems)), problems)


def relative_path_problem(path):
    """Why ``path`` is not a clean relative POSIX path of a checkpoint file, or None.

    The bundle's path rule (_paths.path_problem: the import checks every manifest with it) plus one
    more for checkpoints. The one path rule of a checkpoint manifest, for every reader: checkpoint_sync, checkpoint_verify,
    the bundle build and model-pull (which ships this file in its image). Dot-files and dot-directories
    (.gitattributes, .cache/, .git/) are not part of a checkpoint: list_files() leaves them out on both
    sides, so a manifest that names one was not made by this collection."""
    why = path_problem(path)
    if why:
        return why
    parts = path.split("/")
    if any(part.startswith(".") for part in parts):
        return "names a dot-file or dot-directory, which is not part of a checkpoint (rebuild the bundle)"
    return None


def load_manifest(path):
    """Read and validate a manifest file."""
    try:
        with open(path, "rb") as fh:
            data = json.loads(fh.read().decode("utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError("cannot read the checkpoint manifest %s: %s" % (path, e))
    validate_manifest(data, "manifest %s" % path)
    return data


def parse_manifest_bytes(data, where):
    """Validate manifest bytes (e.g. fetched from the object store)."""
    try:
        manifest = json.loads(data.decode("utf-8"))
    except ValueError as e:
        raise CheckpointError("%s is not JSON: %s" % (where, e))
    validate_manifest(manifest, where)
    return manifest


# --- local files ----------------------------------------------------------------------------
def list_files(root):
    """{relative posix path: size} of the regular files under ``root``: the one listing rule of a checkpoint.

    Names starting with '.' (files and directories: .git, .cache, .llmops, ...) are not part of a
    checkpoint and are skipped, links among them too (never read). Symbolic links are not followed
    out of ``root``: a link to a file inside ``root`` lists that file under the link's name; a link
    that leaves ``root``, dangles, or names a directory (a loop, or a second copy) raises
    CheckpointError naming every such link, before anything is read."""
    if not os.path.isdir(root):
        raise CheckpointError("checkpoint directory %s does not exist or is not a directory" % root)
    real_root = os.path.realpath(root)
    out = {}
    refused = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel = os.path.relpath(dirpath, root)
        keep = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            full = os.path.join(dirpath, d)
            if os.path.islink(full):
                key = d if rel == "." else "/".join(rel.split(os.sep) + [d])
                refused.append("%s is a symbolic link to the directory %s: refused (copy the files into the "
                               "checkpoint directory instead of linking)" % (key, os.readlink(full)))
                continue
            keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            full = os.path.join(dirpath, name)
            key = name if rel == "." else "/".join(rel.split(os.sep) + [name])
            if os.path.islink(full):
                target = os.path.realpath(full)
                if os.path.commonpath([real_root, target]) != real_root:
                    refused.append("%s is a symbolic link to %s, outside the checkpoint directory %s: refused "
                                   "(it could put any file of this host into the bundle or the object store); "
                                   "if the file belongs to the model, replace the link with the file itself "
                                   "(cp --dereference)" % (key, os.readlink(full), root))
                    continue
                if not os.path.isfile(target):
                    refused.append("%s is a symbolic link to %s, which is not a regular file: refused"
                                   % (key, os.readlink(full)))
                    continue
                out[key] = os.stat(target).st_size
                continue
            st = os.lstat(full)
            if stat.S_ISREG(st.st_mode):
                out[key] = st.st_size
    if refused:
        raise CheckpointError("checkpoint directory %s has %d symbolic link(s) that are not followed: %s"
                              % (root, len(refused), "; ".join(refused)), refused)
    return out


def open_inside(root, rel):
    """Open ``root/rel`` for reading without following a link out of ``root`` (a file swapped for a
    link after list_files() is refused, not read)."""
    real_root = os.path.realpath(root)
    target = os.path.realpath(os.path.join(root, rel))
    if os.path.commonpath([real_root, target]) != real_root:
        raise CheckpointError("%s leads out of the checkpoint directory %s (to %s): refused" % (rel, root, target))
    try:
        fd = os.open(target, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise CheckpointError("cannot read %s in %s: %s" % (rel, root, e))
    return os.fdopen(fd, "rb", buffering=0)


def sha256_inside(root, rel, block=HASH_BLOCK):
    """sha256 hex of ``rel`` under ``root``, read with open_inside() (never leaving root, no link followed)."""
    with open_inside(root, rel) as fh:
        return sha256_fileobj(fh, block, name=os.path.join(root, rel))


def hash_files(root, paths, workers=4):
    """{path: sha256} for these relative paths, hashed in parallel (hashlib drops the GIL)."""
    paths = list(paths)
    if not paths:
        return {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(workers, len(paths)))) as pool:
        digests = pool.map(lambda p: sha256_inside(root, p), paths)
        return dict(zip(paths, digests))


def manifest_from_dir(root, name, workers=4):
    """Hash every file of the checkpoint and build its manifest."""
    sizes = list_files(root)
    digests = hash_files(root, sorted(sizes), workers)
    return build_manifest(name, [dict(path=p, size=s, sha256=digests[p]) for p, s in sizes.items()])


def compare_with_manifest(root, manifest, workers=4, hash_contents=True):
    """Problems of the local files against the manifest: missing, extra, size and sha256 mismatches.

    Returns (problems, checked) where checked counts files whose content was hashed."""
    local = list_files(root)
    wanted = dict((f["path"], f) for f in manifest["files"])
    problems = []
    missing = sorted(set(wanted) - set(local))
    extra = sorted(set(local) - set(wanted))
    if missing:
        problems.append("missing (in the manifest, not in %s): %s" % (root, ", ".join(missing)))
    if extra:
        problems.append("extra (in %s, not in the manifest): %s" % (root, ", ".join(extra)))
    same_size = []
    for path in sorted(set(wanted) & set(local)):
        if local[path] != wanted[path]["size"]:
            problems.append("%s: size %d, the manifest says %d" % (path, local[path], wanted[path]["size"]))
        else:
            same_size.append(path)
    checked = 0
    if hash_contents:
        digests = hash_files(root, same_size, workers)
        checked = len(digests)
        for path in same_size:
            if digests[path] != wanted[path]["sha256"]:
                problems.append("%s: sha256 %s, the manifest says %s" % (path, digests[path], wanted[path]["sha256"]))
    return problems, checked


# --- Hugging Face layout --------------------------------------------------------------------
def _tensor_nbytes(dtype, shape):
    count = 1
    for dim in shape:
        count *= dim
    if dtype in DTYPE_BYTES:
        return count * DTYPE_BYTES[dtype]
    if dtype in DTYPE_BITS:
        return (count * DTYPE_BITS[dtype] + 7) // 8
    return None


def safetensors_header(path, name=None):
    """Parse and check a safetensors file's structure without reading its tensor data.

    Returns (tensor names, header length). Raises CheckpointError naming the file and the fault:
    short length prefix, header not JSON, a tensor whose offsets do not match its dtype and shape,
    offsets past the end of the file, a truncated file, or trailing bytes. ``name`` is how the
    messages name the file (default its base name)."""
    name = name or os.path.basename(path)
    size = os.stat(path).st_size
    with open(path, "rb") as fh:
        prefix = fh.read(8)
        if len(prefix) < 8:
            raise CheckpointError("%s: not a safetensors file: %d bytes, shorter than the 8-byte header length" % (name, size))
        (hlen,) = struct.unpack("<Q", prefix)
        if hlen > MAX_HEADER or 8 + hlen > size:
            raise CheckpointError("%s: header length %d does not fit in the file (%d bytes): truncated or not a safetensors file"
                                  % (name, hlen, size))
        raw = fh.read(hlen)
    try:
        header = json.loads(raw.decode("utf-8"))
    except ValueError as e:
        raise CheckpointError("%s: the %d-byte header is not JSON: %s" % (name, hlen, e))
    if not isinstance(header, dict):
        raise CheckpointError("%s: the header is not a JSON object" % name)
    data_len = size - 8 - hlen
    spans = []
    for tensor, info in header.items():
        if tensor == "__metadata__":
            continue
        ok = (isinstance(info, dict) and isinstance(info.get("dtype"), str) and isinstance(info.get("shape"), list)
              and all(isinstance(d, int) and d >= 0 for d in info["shape"])
              and isinstance(info.get("data_offsets"), list) and len(info["data_offsets"]) == 2
              and all(isinstance(o, int) and o >= 0 for o in info["data_offsets"]))
        if not ok:
            raise CheckpointError("%s: tensor %r has no valid dtype/shape/data_offsets in the header" % (name, tensor))
        begin, end = info["data_offsets"]
        need = _tensor_nbytes(info["dtype"], info["shape"])
        if need is None:
            raise CheckpointError("%s: tensor %r has unknown dtype %r" % (name, tensor, info["dtype"]))
        if end < begin or end - begin != need:
            raise CheckpointError("%s: tensor %r data_offsets [%d, %d] span %d bytes, but %s %s needs %d"
                                  % (name, tensor, begin, end, end - begin, info["dtype"], info["shape"], need))
        spans.append((begin, end, tensor))
    spans.sort()
    expected = 0
    tiled = True
    for begin, end, tensor in spans:
        tiled = tiled and begin == expected
        expected = end if begin == expected else max(expected, end)
    data_end = max([0] + [s[1] for s in spans])
    if data_end > data_len:
        if tiled:
            raise CheckpointError("%s: truncated: the header describes %d bytes of tensor data, the file holds %d "
                                  "(file size %d, expected %d)" % (name, data_end, data_len, size, 8 + hlen + data_end))
        begin, end, tensor = max(spans, key=lambda s: s[1])
        raise CheckpointError("%s: tensor %r data_offsets [%d, %d] point past the end of the file (tensor data is %d bytes)"
                              % (name, tensor, begin, end, data_len))
    if not tiled:
        raise CheckpointError("%s: the tensors' data_offsets leave holes or overlap (a corrupt header)" % name)
    if data_end < data_len:
        raise CheckpointError("%s: %d bytes after the last tensor (file size %d, the header accounts for %d)"
                              % (name, data_len - data_end, size, 8 + hlen + data_end))
    return [s[2] for s in spans], hlen


def _archive_kind(path):
    lower = path.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lower.endswith(suffix):
            return suffix
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return None
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    return None


def check_layout(root, require_tokenizer=True):
    """Every problem of a Hugging Face checkpoint directory, as a list of messages (empty = good).

    Reads structure, not names: config.json must parse; each *.safetensors header must parse
    and its tensor offsets fit the file exactly; model.safetensors.index.json must name only
    existing shards, every shard, and tensors that the named shard holds; a tokenizer must be
    present (tokenizer.json, tokenizer.model, vocab.json + merges.txt, or tiktoken.model);
    an archive where the files should be is refused ("extract it first")."""
    files = list_files(root)
    problems = []
    archives = []
    for path in sorted(files):
        if path.endswith((".safetensors", ".json")):
            continue
        kind = _archive_kind(os.path.join(root, path))
        if kind:
            archives.append("%s (%s)" % (path, kind))
    if archives:
        problems.append("%s holds an archive instead of checkpoint files: %s; extract it first "
                        "(tar -xf ARCHIVE -C DIR --strip-components=1) so config.json and the *.safetensors "
                        "files sit directly in the directory" % (root, ", ".join(archives)))
    if "config.json" not in files:
        problems.append("config.json is missing from %s" % root)
    else:
        try:
            with open(os.path.join(root, "config.json"), "rb") as fh:
                config = json.loads(fh.read().decode("utf-8"))
            if not isinstance(config, dict):
                problems.append("config.json is not a JSON object")
        except ValueError as e:
            problems.append("config.json does not parse: %s" % e)
    # vLLM and transformers load the *.safetensors at the top of the directory; a file deeper down is
    # not a shard of the model: a LoRA adapter's weights (a directory with adapter_config.json, as the
    # serving chart's loraModules name them) or an extra copy. Every header is still checked.
    shards = sorted(p for p in files if p.endswith(".safetensors") and "/" not in p)
    tensors = {}
    for shard in sorted(p for p in files if p.endswith(".safetensors")):
        try:
            names = set(safetensors_header(os.path.join(root, shard), name=shard)[0])
        except CheckpointError as e:
            problems.append(str(e))
            continue
        if shard in shards:
            tensors[shard] = names
    problems.extend(_adapter_problems(files))
    if not shards:
        problems.append("no *.safetensors weights in %s (pickled *.bin weights are not loaded; convert them to safetensors)"
                        % root)
    index_name = "model.safetensors.index.json"
    if index_name in files:
        problems.extend(_index_problems(root, index_name, shards, tensors))
    elif len(shards) > 1:
        problems.append("%d safetensors shards but no %s to map tensors to them" % (len(shards), index_name))
    if require_tokenizer and not any(all(f in files for f in group) for group in TOKENIZER_SETS):
        problems.append("no tokenizer in %s: expected tokenizer.json, tokenizer.model, vocab.json + merges.txt, "
                        "or tiktoken.model" % root)
    return problems


def _adapter_problems(files):
    """A LoRA adapter directory (it holds adapter_config.json) needs its weights beside it."""
    problems = []
    for config in sorted(p for p in files if p.rsplit("/", 1)[-1] == "adapter_config.json" and "/" in p):
        d = config.rsplit("/", 1)[0]
        if not any(p.startswith(d + "/adapter_model.") and p.endswith((".safetensors", ".bin")) for p in files):
            problems.append("LoRA adapter %s has adapter_config.json but no adapter_model.safetensors" % d)
    return problems


def _index_problems(root, index_name, shards, tensors):
    problems = []
    try:
        with open(os.path.join(root, index_name), "rb") as fh:
            index = json.loads(fh.read().decode("utf-8"))
        weight_map = index["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ValueError("weight_map is not an object of file names")
    except (ValueError, KeyError, TypeError) as e:
        return ["%s does not parse: %s" % (index_name, e)]
    named = set(weight_map.values())
    missing = sorted(named - set(shards))
    if missing:
        problems.append("%s names shard(s) that do not exist: %s" % (index_name, ", ".join(missing)))
    unnamed = sorted(set(shards) - named)
    if unnamed:
        problems.append("%s does not name shard(s): %s" % (index_name, ", ".join(unnamed)))
    wrong = sorted(t for t, shard in weight_map.items() if shard in tensors and t not in tensors[shard])
    if wrong:
        problems.append("%s maps tensor(s) to a shard that does not hold them: %s" % (
            index_name, ", ".join("%s -> %s" % (t, weight_map[t]) for t in wrong[:10])
            + (" (and %d more)" % (len(wrong) - 10) if len(wrong) > 10 else "")))
    return problems
