#!/usr/bin/env bash
# skiff's two entry points (see README.md):
#   sudo ./skiff.sh up     build skiff and start the one-node cluster (skiff up)
#   sudo ./skiff.sh test   install what the tests need, then run every test, privileged ones too
# Both install their own apt packages and kubectl; they need a Rust toolchain (rustup) on PATH.
set -euo pipefail
cd "$(dirname "$0")"
top=$PWD

APT_PACKAGES=(iptables iproute2 busybox-static runc crun etcd-server skopeo docker-registry
  protobuf-compiler libseccomp-dev pkg-config hyperfine python3-pip python3-venv ca-certificates
  qemu-system-x86 cpio)

need_root() {
  if [[ $(id -u) != 0 ]]; then
    echo "skiff.sh: $1 needs root (namespaces, cgroups, iptables): run it with sudo" >&2
    exit 77
  fi
}

install_deps() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "skiff.sh: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  # The docker-registry package starts a registry on :5000; tests run their own on loopback.
  systemctl disable --now docker-registry >/dev/null 2>&1 || true
  if ! command -v cargo >/dev/null; then
    echo "skiff.sh: cargo not found: install a Rust toolchain (rustup) first" >&2
    exit 69
  fi
  local kubectl_version
  kubectl_version=$(bash tools/install-kubectl.sh "$top/.tools/bin" 37)
  echo "skiff.sh: kubectl: $kubectl_version"
  export PATH="$top/.tools/bin:$PATH"
  # The official Python client, for tests that prove skiff serves more than kubectl.
  if [[ ! -x .tools/venv/bin/python ]] || ! .tools/venv/bin/python -c 'import kubernetes' 2>/dev/null; then
    python3 -m venv .tools/venv
    .tools/venv/bin/pip install --quiet kubernetes
  fi
  export SKIFF_PYTHON="$top/.tools/venv/bin/python"
  export SKIFF_KUBECTL="$top/.tools/bin/kubectl"
}

# Sum cargo's per-binary "test result:" lines into one closing line. Tests that find the host
# lacking something they need pass early and append "<test>: <reason>" to $SKIFF_SKIP_LOG;
# those are reported as skipped, not passed.
summarize() {
  local log=$1 rc=$2 passed failed skipped
  passed=$(awk '/^test result:/ { for (i = 1; i < NF; i++) if ($(i+1) ~ /^passed/) n += $i } END { print n + 0 }' "$log")
  failed=$(awk '/^test result:/ { for (i = 1; i < NF; i++) if ($(i+1) ~ /^failed/) n += $i } END { print n + 0 }' "$log")
  skipped=$(sort -u "$SKIFF_SKIP_LOG" | grep -c . || true)
  passed=${passed:-0} failed=${failed:-0}
  passed=$((passed - skipped))
  if ((skipped)); then
    echo "skipped tests (host lacks what they need):"
    sort -u "$SKIFF_SKIP_LOG" | sed 's/^/  /'
  fi
  if ((rc != 0 && failed == 0)); then
    echo "skiff.sh: cargo test exited $rc (a build error or a crashed test binary)"
    failed=1
  fi
  echo "summary: $passed passed, $failed failed, $skipped skipped"
  ((rc == 0 && failed == 0))
}

cmd_test() {
  need_root "the test suite"
  install_deps
  export SKIFF_SKIP_LOG
  SKIFF_SKIP_LOG=$(mktemp /tmp/skiff-skips.XXXXXX)
  local log rc=0
  log=$(mktemp /tmp/skiff-test-log.XXXXXX)
  cargo build --workspace --all-targets
  cargo test --workspace --no-fail-fast -- --include-ignored 2>&1 | tee "$log" || rc=${PIPESTATUS[0]}
  # --- VM lane (vagrant/qemu) ---
  # This host's cgroups are hybrid, so cgroup v2 is proven in a qemu VM whose kernel mounts
  # cgroup2 alone (docs/vm-lane.md): the cgroup-sensitive test binaries run there too, then
  # `skiff up` serves examples/hello-nodeport.yaml on the guest's own network. Their
  # "test result:" lines go to the same log; a failure fails the run; a host that cannot boot
  # the VM records one counted skip.
  bash vagrant/qemu/lane.sh --suite cgroup --suite cluster --skip-counted 2>&1 | tee -a "$log" || rc=${PIPESTATUS[0]}
  # --- end VM lane ---
  summarize "$log" "$rc"
}

# An OCI image layout of the host's busybox-static, tagged 1: examples/hello-nodeport.yaml's
# skiff.local/busybox:1, so the walkthrough works with no registry reachable.
busybox_layout() {
  local bin=$1 out=$2 work arch diffid layer lsize config csize manifest msize
  [[ -f $out/index.json ]] && return 0
  work=$(mktemp -d)
  "$bin" image bundle --busybox "$work/bundle" >/dev/null
  tar -C "$work/bundle/rootfs" --numeric-owner -cf - . | gzip -n >"$work/layer"
  diffid=$(gzip -dc "$work/layer" | sha256sum | cut -d' ' -f1)
  arch=$(dpkg --print-architecture)
  mkdir -p "$out/blobs/sha256"
  layer=$(sha256sum "$work/layer" | cut -d' ' -f1); lsize=$(stat -c %s "$work/layer")
  mv "$work/layer" "$out/blobs/sha256/$layer"
  printf '{"architecture":"%s","os":"linux","config":{"Cmd":["sh"],"Env":["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$arch" "$diffid" >"$work/config"
  config=$(sha256sum "$work/config" | cut -d' ' -f1); csize=$(stat -c %s "$work/config")
  mv "$work/config" "$out/blobs/sha256/$config"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
    "$config" "$csize" "$layer" "$lsize" >"$work/manifest"
  manifest=$(sha256sum "$work/manifest" | cut -d' ' -f1); msize=$(stat -c %s "$work/manifest")
  mv "$work/manifest" "$out/blobs/sha256/$manifest"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$out/oci-layout"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"1"}}]}' \
    "$manifest" "$msize" >"$out/index.json"
  rm -rf "$work"
}

cmd_up() {
  need_root "skiff up"
  install_deps
  cargo build --release
  local bin=${CARGO_TARGET_DIR:-$top/target}/release/skiff
  busybox_layout "$bin" "$top/.tools/busybox-image"
  exec "$bin" up --image "skiff.local/busybox:1=$top/.tools/busybox-image" "$@"
}

case ${1:-} in
  test) shift; cmd_test "$@" ;;
  up) shift; cmd_up "$@" ;;
  deps) install_deps ;;
  *) echo "usage: $0 up|test|deps" >&2; exit 64 ;;
esac
