#!/bin/sh
# llmops-verify.sh - the first thing a site runs on an llmops.onprem bundle, before anything
# from the medium runs or is installed. POSIX sh; it needs only what a stock Debian 12 has:
# openssl (3.x), base64, sha256sum, tar, awk, mktemp.
#
#   sh llmops-verify.sh --key SITE_KEY --bundle BUNDLE [--extract DIR]
#
#   --key PATH      the bundle signing public key (PEM, Ed25519) the site got out of band,
#                   never from the bundle itself (a key inside BUNDLE is refused)
#   --bundle DIR    the medium with bundle-NNNN.tar segments, or an unpacked bundle directory
#   --extract DIR   where to put the controller bootstrap (bootstrap.sh, python/, collections/);
#                   DIR must not exist yet; it appears only when every file verified
#
# 1. Copies manifest.json and manifest.json.sig off the medium and checks the signature with
#    `openssl pkeyutl -verify -rawin` and the site's key. Nothing else is read before that.
# 2. Takes from the signed manifest the sha256 and size of bootstrap.sh, python/* and
#    collections/*, and extracts exactly those (tar -xO: the archive never chooses a path),
#    never more bytes than signed, each checked against its signed sha256.
# 3. Writes DIR/SHA256SUMS (from the signed manifest) and DIR/VERIFIED, which bootstrap.sh
#    checks again before it creates anything.
# Exit status: 0 verified, 1 refused (nothing extracted), 2 wrong usage.
set -eu

say() { printf 'llmops-verify: %s\n' "$*" >&2; }
refuse() { printf 'llmops-verify: %s\n' "$*" >&2; exit 1; }
usage() { printf 'llmops-verify: %s (see --help)\n' "$*" >&2; exit 2; }

key="" bundle="" extract=""
while [ $# -gt 0 ]; do
  case $1 in
    --key) [ $# -ge 2 ] || usage "--key needs the site's public key file"; key=$2; shift 2 ;;
    --bundle) [ $# -ge 2 ] || usage "--bundle needs the medium or bundle directory"; bundle=$2; shift 2 ;;
    --extract) [ $# -ge 2 ] || usage "--extract needs a directory"; extract=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) usage "unknown argument $1" ;;
  esac
done
[ -n "$key" ] || usage "--key is required: the bundle signing public key the site got out of band"
[ -n "$bundle" ] || usage "--bundle is required: the mounted medium or the bundle directory"

for tool in openssl base64 sha256sum tar awk mktemp head; do
  command -v "$tool" >/dev/null 2>&1 || refuse "$tool not found: install it from the site's OS media (Debian: openssl, coreutils, tar, mawk)"
done

[ -d "$bundle" ] || refuse "$bundle is not a directory: pass the mounted medium or the bundle directory with --bundle"
bundle=$(cd "$bundle" && pwd -P)
[ -f "$key" ] || refuse "the public key $key does not exist: pass the site's copy, carried separately from the bundle"
keydir=$(cd "$(dirname "$key")" && pwd -P)
key=$keydir/$(basename "$key")
case "$keydir/" in
  "$bundle"/*) refuse "the public key $key lies inside the bundle $bundle: a key that travels with the bundle proves nothing. Use the site's copy, carried out of band" ;;
esac
if [ -n "$extract" ]; then
  [ ! -e "$extract" ] || refuse "$extract already exists: pass a new directory to --extract (an earlier extraction is not reused)"
  parent=$(dirname "$extract")
  [ -d "$parent" ] || refuse "the directory $parent (for --extract) does not exist: create it first"
  parent=$(cd "$parent" && pwd -P)
  extract=$parent/$(basename "$extract")
  case "$parent/" in
    "$bundle"/*) refuse "$extract lies inside the bundle $bundle: extract to a directory outside it" ;;
  esac
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/llmops-verify.XXXXXX")
stage=""
cleanup() { rm -rf "$work"; [ -z "$stage" ] || rm -rf "$stage"; }
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

# ---- 1. the signature, with the site's key, on a private copy of the manifest ----------------
for f in manifest.json manifest.json.sig; do
  [ -f "$bundle/$f" ] || refuse "$bundle/$f is missing: this is not a signed llmops.onprem bundle (or not the whole medium). Refusing it; nothing was extracted or installed"
done
cp "$bundle/manifest.json" "$work/manifest.json"
base64 -d < "$bundle/manifest.json.sig" > "$work/manifest.sig" 2>/dev/null \
  || refuse "$bundle/manifest.json.sig is not a base64 signature. Refusing the bundle; nothing was extracted or installed"
openssl pkey -pubin -in "$key" -noout -text 2>/dev/null | head -n 1 | grep -q 'ED25519 Public-Key' \
  || refuse "the public key $key is not an Ed25519 public key in PEM form: use the signing-key.pub.pem the bundle build wrote"
if ! openssl pkeyutl -verify -pubin -inkey "$key" -rawin -in "$work/manifest.json" -sigfile "$work/manifest.sig" >"$work/openssl.out" 2>&1; then
  refuse "the signature of $bundle/manifest.json does not verify with the public key $key: the manifest was changed after signing, or the bundle was signed with another key. Refusing the bundle; nothing was extracted or installed. Check that $key is the site's key (compare its fingerprint with the one given out of band) and get the bundle again"
fi
manifest_sha256=$(sha256sum < "$work/manifest.json" | cut -d' ' -f1)
say "signature of manifest.json verified with $key (manifest sha256 $manifest_sha256)"

# ---- 2. what the signed manifest says about the bootstrap parts ------------------------------
# manifest.json is canonical JSON (sorted keys, one-space indent): under the top-level "files",
# each entry is "path", "sha256", "size" at four spaces. The bytes are signed, so the layout is ours.
awk '
  /^ "files": \{$/ { inf = 1; next }
  inf && /^ [^ ]/ { inf = 0 }
  inf && /^    "path": "/ { p = $0; sub(/^    "path": "/, "", p); sub(/",$/, "", p); next }
  inf && /^    "sha256": "/ { h = $0; sub(/^    "sha256": "/, "", h); sub(/",$/, "", h); next }
  inf && /^    "size": / { s = $0; sub(/^    "size": /, "", s); sub(/,$/, "", s); print h " " s " " p; p = ""; h = "" }
' "$work/manifest.json" > "$work/entries"
: > "$work/wanted"
while read -r h s p; do
  case $p in
    bootstrap.sh|python/*|collections/*) ;;
    *) continue ;;
  esac
  case $p in
    */*/*|*[!A-Za-z0-9._+/-]*|python/.*|collections/.*) refuse "the signed manifest lists $p, which is not a name the bootstrap accepts (one level under python/ or collections/, letters, digits and ._+-). Refusing the bundle; nothing was extracted or installed" ;;
  esac
  case $h in
    *[!0-9a-f]*) refuse "the signed manifest gives $p an unreadable sha256 ($h)" ;;
  esac
  [ ${#h} -eq 64 ] || refuse "the signed manifest gives $p an unreadable sha256 ($h)"
  case $s in
    ''|*[!0-9]*) refuse "the signed manifest gives $p an unreadable size ($s)" ;;
  esac
  printf '%s %s %s\n' "$h" "$s" "$p" >> "$work/wanted"
done < "$work/entries"
files=$(awk 'END { print NR }' "$work/wanted")
if [ "$files" -eq 0 ]; then
  say "this bundle carries no controller bootstrap (bundle_spec.python.enabled was false): the site brings its own Ansible and this collection"
  [ -z "$extract" ] || refuse "nothing to extract to $extract: the bundle has no bootstrap.sh, python/ or collections/"
  say "verified; run the site install with -e llmops_bundle=$bundle -e bundle_import_public_key=$key"
  exit 0
fi
grep -q ' bootstrap\.sh$' "$work/wanted" || refuse "the signed manifest lists python/ or collections/ but no bootstrap.sh: the bundle is incomplete"
grep -q ' python/requirements\.lock$' "$work/wanted" || refuse "the signed manifest lists no python/requirements.lock: the bundle is incomplete"

# ---- 3. extract exactly those files, never more bytes than signed, each checked ----------------
if [ -n "$extract" ]; then
  stage=$(mktemp -d "$parent/.llmops-verify.XXXXXX")
else
  stage=$(mktemp -d "$work/extract.XXXXXX")
fi
segmented=false
if [ -f "$bundle/segments.json" ]; then
  segmented=true
  # Where each member lies: "segment<TAB>member" for every segment on the medium. The listing
  # only says where to look; what is taken is checked against the signed manifest.
  : > "$work/members"
  for seg in "$bundle"/bundle-[0-9][0-9][0-9][0-9].tar; do
    [ -f "$seg" ] || continue
    name=$(basename "$seg")
    tar -tf "$seg" 2>/dev/null | awk -v s="$name" '{ print s "\t" $0 }' >> "$work/members" \
      || refuse "segment $bundle/$name is not a readable tar: the medium is damaged. Refusing the bundle; nothing was extracted or installed"
  done
fi

tab=$(printf '\t')
while read -r h s p; do
  mkdir -p "$stage/$(dirname "$p")"
  out=$stage/$p
  if $segmented; then
    awk -F '\t' -v p="$p" '
      $2 == p { print; next }
      index($2, p ".part-") == 1 && substr($2, length(p) + 7) ~ /^[0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9]$/ { print }
    ' "$work/members" | sort -t "$tab" -k2,2 > "$work/parts"
    if [ ! -s "$work/parts" ] && grep -q '"media":' "$bundle/segments.json"; then
      refuse "missing file $p: the signed manifest lists it ($s bytes) but no segment on $bundle holds it. The bundle is spread over several media and the controller bootstrap is on medium 1: run this with medium 1 mounted. Refusing the bundle; nothing was extracted or installed"
    fi
    [ -s "$work/parts" ] || refuse "missing file $p: the signed manifest lists it ($s bytes) but no segment on $bundle holds it. Copy every segment onto the medium. Refusing the bundle; nothing was extracted or installed"
    while IFS=$tab read -r seg mem; do
      tar -xOf "$bundle/$seg" "$mem" 2>/dev/null || true
    done < "$work/parts" | head -c $((s + 1)) > "$out"
  else
    [ -f "$bundle/$p" ] || refuse "missing file $p (listed in the signed manifest, $s bytes) in $bundle. Refusing the bundle; nothing was extracted or installed"
    head -c $((s + 1)) < "$bundle/$p" > "$out"
  fi
  got_size=$(($(wc -c < "$out")))
  got=$(sha256sum < "$out" | cut -d' ' -f1)
  if [ "$got_size" -ne "$s" ] || [ "$got" != "$h" ]; then
    refuse "sha256 mismatch for $p: the signed manifest says $h ($s bytes), $bundle holds $got ($( [ "$got_size" -gt "$s" ] && echo "more than $s" || echo "$got_size") bytes). The medium is damaged or was tampered with: refusing the bundle, nothing was extracted or installed"
  fi
  printf '%s  %s\n' "$h" "$p" >> "$stage/SHA256SUMS"
done < "$work/wanted"
for lock in "$stage"/python/requirements*.lock; do
  grep -q -- '--hash=sha256:' "$lock" \
    || refuse "python/$(basename "$lock") carries no --hash=sha256: pins: the bundle was built by an older llmops.onprem, whose wheels pip cannot check. Rebuild the bundle. Nothing was extracted or installed"
done

# ---- 4. hand over --------------------------------------------------------------------------
if [ -z "$extract" ]; then
  say "verified: the signature and the $files files of the controller bootstrap (nothing extracted; pass --extract DIR to get them)"
  exit 0
fi
printf 'bundle %s\npublic_key %s\nmanifest_sha256 %s\n' "$bundle" "$key" "$manifest_sha256" > "$stage/VERIFIED"
chmod 0755 "$stage"
chmod 0755 "$stage/bootstrap.sh"
mv "$stage" "$extract" || refuse "cannot move the verified files to $extract"
stage=""
say "verified and extracted the controller bootstrap ($files files) to $extract"
say "next: sh $extract/bootstrap.sh --inventory inventories/<site>"
