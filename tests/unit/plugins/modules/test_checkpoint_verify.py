"""checkpoint_verify and the _checkpoint helpers over real safetensors files written with the
`safetensors` library (no numpy: tensors are raw bytes handed over by pointer)."""
import ctypes
import hashlib
import json
import os
import struct
import tarfile

import pytest
import safetensors

from ansible_collections.llmops.onprem.plugins.module_utils import _checkpoint
from ansible_collections.llmops.onprem.plugins.modules import checkpoint_verify


def write_safetensors(path, tensors):
    """tensors: {name: (dtype, shape, bytes)} -> a real safetensors file."""
    keep = []
    specs = {}
    for name, (dtype, shape, data) in tensors.items():
        buf = ctypes.create_string_buffer(data, len(data))
        keep.append(buf)
        specs[name] = safetensors.TensorSpec(dtype=dtype, shape=shape, data_ptr=ctypes.addressof(buf), data_len=len(data))
    with open(path, "wb") as fh:
        fh.write(safetensors.serialize(specs, metadata={"format": "pt"}))


def make_checkpoint(root, shards=2, tokenizer=True):
    """A small sharded Hugging Face checkpoint: config, index, shards, tokenizer."""
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "config.json"), "w") as fh:
        json.dump({"architectures": ["LlamaForCausalLM"], "hidden_size": 8, "num_hidden_layers": shards}, fh)
    weight_map = {}
    for i in range(shards):
        name = "model-%05d-of-%05d.safetensors" % (i + 1, shards)
        tensors = {"layers.%d.w" % i: ("float32", [4, 8], bytes([i + 1]) * 128),
                   "layers.%d.b" % i: ("bfloat16", [8], bytes([i + 7]) * 16)}
        write_safetensors(os.path.join(root, name), tensors)
        weight_map.update(dict.fromkeys(tensors, name))
    with open(os.path.join(root, "model.safetensors.index.json"), "w") as fh:
        json.dump({"metadata": {"total_size": 144 * shards}, "weight_map": weight_map}, fh)
    if tokenizer:
        with open(os.path.join(root, "tokenizer.json"), "w") as fh:
            json.dump({"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0}}}, fh)
        with open(os.path.join(root, "tokenizer_config.json"), "w") as fh:
            json.dump({"model_max_length": 2048}, fh)
    return root


@pytest.fixture
def ckpt(tmp_path):
    return make_checkpoint(str(tmp_path / "model"))


def verify(run_module, path, **kw):
    return run_module(checkpoint_verify, dict(path=path, **kw))


def test_good_layout_passes(ckpt, run_module):
    result = verify(run_module, ckpt)
    assert not result.get("failed"), result
    assert result["files"] == 6 and result["hashed"] == 0 and result["problems"] == [] and not result["changed"]


def test_safetensors_written_by_the_library_parse(ckpt):
    names, hlen = _checkpoint.safetensors_header(os.path.join(ckpt, "model-00001-of-00002.safetensors"))
    assert sorted(names) == ["layers.0.b", "layers.0.w"] and hlen > 0


def test_truncated_shard_is_refused(ckpt, run_module):
    shard = os.path.join(ckpt, "model-00002-of-00002.safetensors")
    size = os.path.getsize(shard)
    with open(shard, "r+b") as fh:
        fh.truncate(size - 10)
    result = verify(run_module, ckpt)
    assert result["failed"]
    assert ("model-00002-of-00002.safetensors: truncated: the header describes 144 bytes of tensor data, "
            "the file holds 134 (file size %d, expected %d)" % (size - 10, size)) in result["msg"]
    assert len(result["problems"]) == 1


def test_header_offset_past_eof_is_refused(ckpt, run_module):
    shard = os.path.join(ckpt, "model-00001-of-00002.safetensors")
    with open(shard, "rb") as fh:
        data = fh.read()
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + hlen])
    header["layers.0.b"]["data_offsets"] = [4096, 4112]  # same 16 bytes, but far past the end
    raw = json.dumps(header).encode()
    with open(shard, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw + data[8 + hlen:])
    result = verify(run_module, ckpt)
    assert result["failed"]
    assert ("model-00001-of-00002.safetensors: tensor 'layers.0.b' data_offsets [4096, 4112] point past the end "
            "of the file (tensor data is 144 bytes)") in result["msg"]


def test_header_that_is_not_json_is_refused(ckpt, run_module):
    shard = os.path.join(ckpt, "model-00001-of-00002.safetensors")
    with open(shard, "r+b") as fh:
        fh.seek(8)
        fh.write(b"\x00\x00")
    result = verify(run_module, ckpt)
    assert result["failed"] and "model-00001-of-00002.safetensors: the " in result["msg"] and "header is not JSON" in result["msg"]


def test_index_naming_a_missing_shard_is_refused(ckpt, run_module):
    os.remove(os.path.join(ckpt, "model-00002-of-00002.safetensors"))
    result = verify(run_module, ckpt)
    assert result["failed"]
    assert ("model.safetensors.index.json names shard(s) that do not exist: model-00002-of-00002.safetensors"
            in result["msg"])


def test_shard_missing_from_the_index_is_refused(ckpt, run_module):
    write_safetensors(os.path.join(ckpt, "model-00003-of-00002.safetensors"), {"x": ("float32", [1], bytes(4))})
    result = verify(run_module, ckpt)
    assert result["failed"]
    assert "model.safetensors.index.json does not name shard(s): model-00003-of-00002.safetensors" in result["msg"]


def test_index_mapping_a_tensor_to_the_wrong_shard_is_refused(ckpt, run_module):
    path = os.path.join(ckpt, "model.safetensors.index.json")
    with open(path) as fh:
        index = json.load(fh)
    index["weight_map"]["layers.0.w"] = "model-00002-of-00002.safetensors"
    with open(path, "w") as fh:
        json.dump(index, fh)
    result = verify(run_module, ckpt)
    assert result["failed"]
    assert ("maps tensor(s) to a shard that does not hold them: layers.0.w -> model-00002-of-00002.safetensors"
            in result["msg"])


def test_missing_tokenizer_is_refused(tmp_path, run_module):
    ckpt = make_checkpoint(str(tmp_path / "m"), tokenizer=False)
    with open(os.path.join(ckpt, "tokenizer_config.json"), "w") as fh:
        fh.write("{}")
    result = verify(run_module, ckpt)
    assert result["failed"]
    assert ("no tokenizer in %s: expected tokenizer.json, tokenizer.model, vocab.json + merges.txt, or tiktoken.model"
            % ckpt) in result["msg"]
    assert not verify(run_module, ckpt, require_tokenizer=False).get("failed")


def test_sentencepiece_tokenizer_counts(tmp_path, run_module):
    ckpt = make_checkpoint(str(tmp_path / "m"), tokenizer=False)
    with open(os.path.join(ckpt, "tokenizer.model"), "wb") as fh:
        fh.write(b"\x0a\x05hello")
    assert not verify(run_module, ckpt).get("failed")


def test_tar_instead_of_files_is_refused(tmp_path, run_module):
    src = make_checkpoint(str(tmp_path / "src"))
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    with tarfile.open(str(prefix / "laguna_xs.tar"), "w") as t:
        t.add(src, arcname="laguna-xs")
    result = verify(run_module, str(prefix))
    assert result["failed"]
    assert ("%s holds an archive instead of checkpoint files: laguna_xs.tar (.tar); extract it first" % prefix) in result["msg"]
    assert "config.json is missing from %s" % prefix in result["msg"]


def test_archive_recognised_by_content_not_name(ckpt, run_module):
    with tarfile.open(os.path.join(ckpt, "weights.bin"), "w") as t:
        t.add(os.path.join(ckpt, "config.json"), arcname="config.json")
    result = verify(run_module, ckpt)
    assert result["failed"] and "weights.bin (tar); extract it first" in result["msg"]


def test_several_shards_without_index_are_refused(ckpt, run_module):
    os.remove(os.path.join(ckpt, "model.safetensors.index.json"))
    result = verify(run_module, ckpt)
    assert result["failed"] and "2 safetensors shards but no model.safetensors.index.json" in result["msg"]


def test_config_that_does_not_parse_is_refused(ckpt, run_module):
    with open(os.path.join(ckpt, "config.json"), "w") as fh:
        fh.write("{not json")
    result = verify(run_module, ckpt)
    assert result["failed"] and "config.json does not parse:" in result["msg"]


def manifest_file(ckpt, path, name="m"):
    manifest = _checkpoint.manifest_from_dir(ckpt, name)
    with open(path, "wb") as fh:
        fh.write(_checkpoint.canonical_bytes(manifest))
    return manifest


def test_manifest_match_hashes_every_file(ckpt, tmp_path, run_module):
    manifest = manifest_file(ckpt, str(tmp_path / "m.json"))
    result = verify(run_module, ckpt, manifest=str(tmp_path / "m.json"))
    assert not result.get("failed"), result
    assert result["hashed"] == 6
    assert result["manifest_digest"] == hashlib.sha256(_checkpoint.canonical_bytes(manifest)).hexdigest()


def test_manifest_mismatch_missing_and_extra_are_reported(ckpt, tmp_path, run_module):
    manifest_file(ckpt, str(tmp_path / "m.json"))
    with open(os.path.join(ckpt, "tokenizer.json"), "r+b") as fh:
        fh.write(b"X")                                  # same size, other content
    os.rename(os.path.join(ckpt, "tokenizer_config.json"), os.path.join(ckpt, "generation_config.json"))
    result = verify(run_module, ckpt, manifest=str(tmp_path / "m.json"))
    assert result["failed"]
    assert "missing (in the manifest, not in %s): tokenizer_config.json" % ckpt in result["msg"]
    assert "extra (in %s, not in the manifest): generation_config.json" % ckpt in result["msg"]
    assert "tokenizer.json: sha256 " in result["msg"] and ", the manifest says " in result["msg"]


def test_manifest_schema_is_checked(ckpt, tmp_path, run_module):
    bad = {"schema": "v0", "name": "m", "files": [{"path": "../x", "size": 1, "sha256": "00"}]}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    result = verify(run_module, ckpt, manifest=str(tmp_path / "bad.json"))
    assert result["failed"]
    assert "is not a valid checkpoint manifest: schema is 'v0', expected 'llmops.onprem/checkpoint-manifest/v1'" in result["msg"]
    assert "files[0].path '../x' has a '..' component (only plain names may appear)" in result["msg"]
    assert "files[0].sha256 must be 64 lowercase hex digits" in result["msg"]


def test_manifest_canonical_bytes_and_digest_are_the_contract():
    sha = "a" * 64
    manifest = _checkpoint.build_manifest("m", [dict(path="b.json", size=2, sha256=sha), dict(path="a.json", size=1, sha256=sha)])
    assert [f["path"] for f in manifest["files"]] == ["a.json", "b.json"]
    expected = ('{"files":[{"path":"a.json","sha256":"%s","size":1},{"path":"b.json","sha256":"%s","size":2}],'
                '"name":"m","schema":"llmops.onprem/checkpoint-manifest/v1"}' % (sha, sha)).encode()
    assert _checkpoint.canonical_bytes(manifest) == expected
    assert _checkpoint.manifest_digest(manifest) == hashlib.sha256(expected).hexdigest()


def test_dot_files_are_not_part_of_a_checkpoint(ckpt):
    os.makedirs(os.path.join(ckpt, ".cache", "huggingface"))
    with open(os.path.join(ckpt, ".cache", "huggingface", "x.lock"), "w") as fh:
        fh.write("x")
    with open(os.path.join(ckpt, ".gitattributes"), "w") as fh:
        fh.write("x")
    assert ".gitattributes" not in _checkpoint.list_files(ckpt)
    assert not any(p.startswith(".cache") for p in _checkpoint.list_files(ckpt))


def test_write_manifest_check_then_real_then_unchanged(ckpt, tmp_path, run_module):
    out = str(tmp_path / "written.json")
    check = verify(run_module, ckpt, write_manifest=out, name="demo", _ansible_check_mode=True)
    assert check["changed"] and not os.path.exists(out)
    real = verify(run_module, ckpt, write_manifest=out, name="demo")
    assert real["changed"] and real["manifest_digest"] == check["manifest_digest"] and real["hashed"] == 6
    with open(out, "rb") as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == real["manifest_digest"]
    assert not verify(run_module, ckpt, write_manifest=out, name="demo")["changed"]
    assert _checkpoint.load_manifest(out)["name"] == "demo"


def test_sizes_only_against_the_manifest(ckpt, tmp_path, run_module):
    manifest_file(ckpt, str(tmp_path / "m.json"))
    with open(os.path.join(ckpt, "tokenizer.json"), "r+b") as fh:
        fh.write(b"X")
    result = verify(run_module, ckpt, manifest=str(tmp_path / "m.json"), hash_contents=False)
    assert not result.get("failed") and result["hashed"] == 0
    assert verify(run_module, ckpt, manifest=str(tmp_path / "m.json"))["failed"]


def _adapter(ckpt, rel, weights=True):
    d = os.path.join(ckpt, rel)
    os.makedirs(d)
    with open(os.path.join(d, "adapter_config.json"), "w") as fh:
        json.dump({"peft_type": "LORA", "r": 8, "target_modules": ["q_proj"]}, fh)
    if weights:
        write_safetensors(os.path.join(d, "adapter_model.safetensors"), {"q.lora_A": ("float32", [8, 8], bytes(256))})
    return d


def test_a_lora_adapter_beside_a_single_file_model_is_not_a_shard(tmp_path, run_module):
    """The demo's model: one model.safetensors and its LoRA adapter under lora/ (the serving chart's
    loraModules path). The adapter's weights are not a second shard of the model."""
    ckpt = make_checkpoint(str(tmp_path / "m"), shards=1)
    os.remove(os.path.join(ckpt, "model.safetensors.index.json"))
    os.rename(os.path.join(ckpt, "model-00001-of-00001.safetensors"), os.path.join(ckpt, "model.safetensors"))
    _adapter(ckpt, "lora/tiny-lora")
    result = verify(run_module, ckpt)
    assert not result.get("failed"), result.get("msg")


def test_an_adapter_without_weights_or_with_a_broken_header_is_refused(ckpt, run_module):
    _adapter(ckpt, "lora/empty", weights=False)
    d = _adapter(ckpt, "lora/broken")
    with open(os.path.join(d, "adapter_model.safetensors"), "r+b") as fh:
        fh.truncate(20)
    result = verify(run_module, ckpt)
    assert result["failed"]
    assert "LoRA adapter lora/empty has adapter_config.json but no adapter_model.safetensors" in result["msg"]
    assert "lora/broken/adapter_model.safetensors" in result["msg"]


def test_top_level_shards_still_need_their_index_with_an_adapter_present(ckpt, run_module):
    _adapter(ckpt, "lora/a")
    os.remove(os.path.join(ckpt, "model.safetensors.index.json"))
    result = verify(run_module, ckpt)
    assert result["failed"] and "2 safetensors shards but no model.safetensors.index.json" in result["msg"]
