#!/usr/bin/env bash
# The VM lane: boot Debian's cloud kernel under qemu with a pure cgroup v2 hierarchy and run
# skiff's privileged test binaries inside it. See docs/vm-lane.md.
#
#   vagrant/qemu/lane.sh [options] [--] [TEST_BINARY[=WORKDIR]]...
#
# Options:
#   --cargo "ARGS"     also run the test binaries `cargo test --no-run ARGS` builds (repeatable),
#                      each from its crate's directory, as cargo would
#   --suite cgroup     the cgroup-sensitive tests: skiff-vm-probe's cgroup_v2, skiff-runtime's
#                      cgroups, the root tests/runtime_*.rs and tests/kubelet_cgroups.rs, taken
#                      from one `cargo test --workspace --no-run` (the binaries the host just ran)
#   --suite cluster    vagrant/qemu/cluster.sh: `skiff up` on the guest's own network, the
#                      hello-nodeport example applied with kubectl, its NodePort fetched
#                      (repeat --suite to run both)
#   --skip-counted     when this host cannot run the lane, record it in $SKIFF_SKIP_LOG as the
#                      skip of one pseudo-test "vm-lane" (printed as cargo would) and exit 0
#   --skiff PATH       the skiff binary (default: target/debug/skiff); packed at the same
#                      absolute path, where env!("CARGO_BIN_EXE_skiff") points, and on PATH
#   --bin PATH         another program the tests exec, packed with its libraries (repeatable)
#   --filter ARG       passed to every test binary after --include-ignored --test-threads=1
#                      (repeatable: a test name filter, --skip NAME, --exact ...)
#   --env NAME=VALUE   exported to the tests inside the VM (repeatable)
#   --timeout SECS     the whole VM run, boot to power-off (default 1500)
#   --test-timeout S   each test binary (default 900)
#   --memory SIZE      VM memory (default 2G)  --smp N  VM cpus (default 2)
#   --cache DIR        kernel cache (default /var/cache/skiff-vm)
#   --accel auto|kvm|tcg  auto: KVM when a probe guest runs under it, else TCG (default)
#   --no-compress      plain cpio instead of gzip: a bigger file, but about 5 s less boot under
#                      TCG, where the kernel's inflate is emulated
#   --keep             keep the work directory (initramfs, console log) and print its path
#
# Output: the serial console (kernel, init and the tests' own output, so cargo's
# "test result:" lines pass through), then one line "vm-lane: exit N after Ts (boot Bs)".
# Lines "SKIFF-VM-SKIP: <test>: <reason>" are the tests' explicit skips inside the VM; when
# $SKIFF_SKIP_LOG is set they are appended to it as "[vm] <test>: <reason>".
#
# Exit status: the tests' (0 when all passed); 77 when this host cannot run the lane (no
# qemu, no kernel package), with the reason on stderr; 124 when the VM timed out; 70 when the
# VM stopped without reporting (kernel panic, init error).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cache=/var/cache/skiff-vm
skiff=${CARGO_TARGET_DIR:-$top/target}/debug/skiff
timeout=1500 test_timeout=900 memory=2G smp=2 keep=0 want_accel=auto compress=1
cargo_args=() extra_bins=() filters=() envs=() tests=() suite=() cluster=0

skip_counted=0
die() { echo "vm-lane: $*" >&2; exit 70; }
skip() {
	echo "vm-lane: skip: $*" >&2
	if ((skip_counted)); then
		# skiff.sh's summary subtracts each skip-log line from the passed count, so the lane
		# reports itself as one passed test that skipped, the way a skipping test does.
		[[ -n ${SKIFF_SKIP_LOG:-} ]] && echo "vm-lane: $*" >>"$SKIFF_SKIP_LOG"
		printf '\nrunning 1 test\ntest vm-lane ... ok\n\n'
		printf 'test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n\n'
		exit 0
	fi
	exit 77
}
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
usage() { sed -n '5,31p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 64; }

while (($#)); do
	case $1 in
	--cargo) cargo_args+=("$2"); shift 2 ;;
	--suite)
		case $2 in
		cgroup)
			# "crate directory:test target (glob)"; picked out of one `cargo test --workspace
			# --no-run`, which reuses the binaries the host's `cargo test --workspace` just
			# ran (a `-p` build can unify features differently and rebuild them).
			suite+=("vagrant/qemu/probe:cgroup_v2" "runtime:cgroups" ".:runtime_*" ".:kubelet_cgroups")
			;;
		cluster) cluster=1 ;;
		*) die "unknown --suite '$2' (known: cgroup, cluster)" ;;
		esac
		# Bounds that keep skiff.sh test within CI's hour on 2 cores even when a test hangs;
		# later --timeout/--test-timeout options still override them.
		timeout=1200 test_timeout=420
		shift 2
		;;
	--skip-counted) skip_counted=1; shift ;;
	--skiff) skiff=$2; shift 2 ;;
	--bin) extra_bins+=("$2"); shift 2 ;;
	--filter) filters+=("$2"); shift 2 ;;
	--env) [[ $2 == [A-Za-z_]*=* ]] || die "--env wants NAME=VALUE, got '$2'"; envs+=("$2"); shift 2 ;;
	--timeout) timeout=$2; shift 2 ;;
	--test-timeout) test_timeout=$2; shift 2 ;;
	--memory) memory=$2; shift 2 ;;
	--smp) smp=$2; shift 2 ;;
	--cache) cache=$2; shift 2 ;;
	--accel) want_accel=$2; shift 2 ;;
	--keep) keep=1; shift ;;
	--no-compress) compress=0; shift ;;
	-h|--help) usage ;;
	--) shift; tests+=("$@"); break ;;
	-*) echo "vm-lane: unknown option '$1'" >&2; usage ;;
	*) tests+=("$1"); shift ;;
	esac
done
[[ $want_accel =~ ^(auto|kvm|tcg)$ ]] || die "--accel wants auto, kvm or tcg, got '$want_accel'"
for n in "$timeout" "$test_timeout" "$smp"; do
	[[ $n =~ ^[0-9]+$ ]] || die "not a number: '$n' (--timeout, --test-timeout, --smp)"
done

[[ $(id -u) == 0 ]] || skip "needs root (apt-get download into $cache, qemu)"
command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 not installed (apt-get install qemu-system-x86)"
for tool in cpio gzip dpkg-deb apt-get ldd python3; do
	command -v "$tool" >/dev/null || skip "$tool not installed"
done
busybox=$(command -v busybox) || skip "busybox not installed (apt-get install busybox-static)"
ldd "$busybox" >/dev/null 2>&1 && skip "$busybox is not static: the initramfs needs busybox-static"

# --- The kernel: the version linux-image-cloud-amd64 depends on, from apt, cached ---------
kernel_pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
	awk '/Depends: linux-image-[0-9]/ { print $2; exit }') || true
[[ -n $kernel_pkg ]] || skip "apt knows no linux-image-cloud-amd64 (run apt-get update?)"
kver=${kernel_pkg#linux-image-}
kdir=$cache/$kver
if [[ ! -f $kdir/done ]]; then
	mkdir -p "$cache"
	rm -rf "$kdir" "$cache/dl"
	mkdir -p "$cache/dl"
	# apt-get download writes into the current directory.
	(cd "$cache/dl" && apt-get download -q "$kernel_pkg" >/dev/null 2>&1) ||
		skip "apt-get download $kernel_pkg failed"
	dpkg-deb -x "$cache"/dl/"$kernel_pkg"_*.deb "$kdir" || die "dpkg-deb -x of $kernel_pkg failed"
	# The package ships no modules.dep (its postinst runs depmod); busybox's depmod makes one
	# (kmod may not be installed: it is not on a minimal host).
	"$busybox" depmod -b "$kdir" "$kver" || die "depmod -b $kdir $kver failed"
	rm -rf "$cache/dl"
	touch "$kdir/done"
fi
vmlinuz=$kdir/boot/vmlinuz-$kver
[[ -f $vmlinuz ]] || die "no $vmlinuz in $kernel_pkg"

# --- Test binaries -----------------------------------------------------------------------
# Each entry is "binary=workdir"; cargo runs a test binary from its package's directory.
for args in "${cargo_args[@]}"; do
	# shellcheck disable=SC2086 # ARGS is a cargo argument list on purpose
	json=$(cd "$top" && cargo test --no-run --message-format=json $args) ||
		die "cargo test --no-run $args failed"
	while IFS=$'\t' read -r exe manifest; do
		tests+=("$exe=$(dirname "$manifest")")
	done < <(python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line) if line.startswith("{") else {}
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"], m["manifest_path"], sep="\t")' <<<"$json")
done
if ((${#suite[@]})); then
	json=$(cd "$top" && cargo test --workspace --no-run --message-format=json) ||
		die "cargo test --workspace --no-run failed"
	while IFS=$'\t' read -r exe dir; do
		tests+=("$exe=$dir")
	done < <(python3 -c '
import fnmatch, json, os, sys
top, wanted = sys.argv[1], [w.split(":", 1) for w in sys.argv[2:]]
for line in sys.stdin:
    m = json.loads(line) if line.startswith("{") else {}
    if m.get("reason") != "compiler-artifact" or not m.get("executable") or "test" not in m["target"]["kind"]:
        continue
    d = os.path.dirname(m["manifest_path"])
    for rel, glob in wanted:
        if os.path.normpath(os.path.join(top, rel)) == d and fnmatch.fnmatch(m["target"]["name"], glob):
            print(m["executable"], d, sep="\t")' "$top" "${suite[@]}" <<<"$json")
fi
# The real kubectl for tests/kubelet_cgroups (--suite cgroup) and the cluster suite, at its
# own path and in SKIFF_KUBECTL, as skiff.sh test exports it.
kubectl=${SKIFF_KUBECTL:-$top/.tools/bin/kubectl}
if ((cluster)) || ((${#suite[@]})); then
	[[ -x $kubectl ]] || skip "--suite needs kubectl: none at $kubectl (./skiff.sh deps installs it, or set SKIFF_KUBECTL)"
	kubectl=$(readlink -f "$kubectl")
	extra_bins+=("$kubectl")
	envs+=("SKIFF_KUBECTL=$kubectl")
fi
if ((cluster)); then
	# Unless the cgroup suite's workspace build just made it, the skiff binary the guest runs.
	((${#suite[@]})) || (cd "$top" && cargo build --bin skiff) || die "cargo build --bin skiff failed"
	# curl: busybox-static's wget segfaults in the guest (its static glibc resolver). Without
	# it the cluster test records an explicit skip.
	command -v curl >/dev/null && extra_bins+=(curl)
	envs+=("SKIFF_VM_BUSYBOX_LAYOUT=/lane/busybox-image" "SKIFF_VM_TOP=$top")
	tests+=("$here/cluster.sh=$top")
fi
((${#tests[@]})) || die "no test binaries given (positional, --cargo or --suite)"
[[ -x $skiff ]] || die "skiff binary '$skiff' not found: build it (cargo build) or pass --skiff"

# --- The initramfs -----------------------------------------------------------------------
work=$(mktemp -d /tmp/skiff-vm.XXXXXX)
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() { if ((keep)); then echo "vm-lane: kept $work" >&2; else rm -rf "$work"; fi; }
trap cleanup EXIT
root=$work/root
mkdir -p "$root"/usr/{bin,sbin,lib,lib64} "$root"/{etc,proc,sys,dev,tmp,run,root,var/tmp,lane}
# Debian 12 is merged-/usr: keep the same layout so library paths from ldd resolve as on the host.
for d in bin sbin lib lib64; do ln -s "usr/$d" "$root/$d"; done

# put SRC [DEST]: copy a file to the same path (or DEST) in the image, following symlinks.
put() {
	local src=$1 dest=${2:-$1}
	mkdir -p "$root$(dirname "$dest")"
	cp -L --preserve=mode "$src" "$root$dest"
}
# put_prog PATH: a program and the shared libraries it links (ldd), loader included.
declare -A seen_libs=()
put_libs() {
	local lib
	while read -r lib; do
		[[ -n $lib && -z ${seen_libs[$lib]:-} ]] || continue
		seen_libs[$lib]=1
		put "$lib"
	done < <(ldd "$1" 2>/dev/null | awk '/=> \// { print $3 } /^\t\/[^ ]+ \(/ { print $1 }')
}
put_prog() {
	put "$1" "${2:-$1}"
	put_libs "$1"
}

# busybox: the shell, coreutils, modprobe, switch_root, poweroff for init and for tests that
# need a container rootfs. Real binaries copied below replace its applet links.
put "$busybox" /usr/bin/busybox
while read -r applet; do
	[[ -e $root/$applet || -L $root/$applet ]] || ln -s /usr/bin/busybox "$root/$applet"
done < <("$busybox" --list-full)

# iptables as the host has it configured (nft or legacy), with its dlopen()ed extensions.
if ipt=$(readlink -f "$(command -v iptables 2>/dev/null)") && [[ -x $ipt ]]; then
	put_prog "$ipt"
	for name in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
		rm -f "$root/usr/sbin/$name"
		ln -s "$ipt" "$root/usr/sbin/$name"
	done
	for ext in /usr/lib/x86_64-linux-gnu/xtables/*.so; do
		[[ -e $ext ]] && put_prog "$ext"
	done
	[[ -d /etc/iproute2 ]] && mkdir -p "$root/etc" && cp -a /etc/iproute2 "$root/etc/"
fi
# The host's shell as `sh` on PATH ahead of busybox: busybox's sh runs its own applets before
# PATH (FEATURE_PREFER_APPLETS), so a test's `sh -c "tar --owner=0 ..."` would get busybox
# tar instead of the GNU tar packed below. The init keeps busybox's /bin/sh.
host_sh=$(readlink -f /bin/sh)
if [[ $host_sh != "$(readlink -f "$busybox")" ]]; then
	mkdir -p "$root/usr/local/bin"
	put_prog "$host_sh" /usr/local/bin/sh
fi
# tar: the test harnesses build image layers with GNU tar's --owner/--sort options.
for p in ip runc crun nsenter unshare tar "${extra_bins[@]}"; do
	path=$(command -v "$p" 2>/dev/null) || { [[ $p == */* ]] && die "--bin $p not found"; continue; }
	real=$(readlink -f "$path")
	rm -f "$root$path"
	put_prog "$real" "$path"
done

# skiff at the path the test binaries were compiled with, and on PATH.
skiff=$(readlink -f "$skiff")
put_prog "$skiff"
ln -sf "$skiff" "$root/usr/local/bin/skiff" 2>/dev/null || {
	mkdir -p "$root/usr/local/bin"
	ln -sf "$skiff" "$root/usr/local/bin/skiff"
}

# The test binaries at their own paths, and the repository's files at theirs (fixtures,
# examples, env!("CARGO_MANIFEST_DIR")): tracked and untracked-but-not-ignored files only.
lane_tests=() lane_dirs=()
for t in "${tests[@]}"; do
	bin=${t%%=*} dir=/
	[[ $t == *=* ]] && dir=${t#*=}
	[[ -x $bin ]] || die "test binary '$bin' not found or not executable"
	bin=$(readlink -f "$bin")
	put_prog "$bin"
	lane_tests+=("$bin") lane_dirs+=("$dir")
done
mkdir -p "$root$top"
if git -C "$top" rev-parse --git-dir >/dev/null 2>&1; then
	git -C "$top" ls-files -z --cached --others --exclude-standard |
		(cd "$top" && tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -C "$root$top" -xf -
else
	# An exported tree (CI copies, tarballs): everything but build output and tools.
	tar -C "$top" --exclude=./target --exclude=./.git --exclude=./.tools --exclude=./vagrant/.vagrant \
		-cf - . | tar -C "$root$top" -xf -
fi

# The image examples/hello-nodeport.yaml runs (skiff.local/busybox:1), built by skiff.sh's own
# busybox_layout from the host's busybox-static: the guest has no registry to pull from.
if ((cluster)); then
	# shellcheck disable=SC1090 # the one function, taken out of skiff.sh
	source <(sed -n '/^busybox_layout() {/,/^}/p' "$top/skiff.sh")
	declare -F busybox_layout >/dev/null || die "no busybox_layout function in $top/skiff.sh"
	busybox_layout "$skiff" "$root/lane/busybox-image" || die "building the busybox image failed"
fi

# Kernel modules: the closure of what skiff needs, loaded in dependency order.
# overlay: image layers; veth/bridge/br_netfilter: pod network; nf_*/iptable_*/xt_*: the
# matches and targets kube-proxy's rules use (comment, statistic, mark, addrtype, conntrack,
# MASQUERADE, recent, DNAT via xt_nat, REJECT); nft_*: iptables-nft's backend.
want_modules=(overlay veth bridge br_netfilter dummy nf_conntrack nf_nat x_tables ip_tables
	iptable_filter iptable_nat iptable_mangle iptable_raw ip6_tables ip6table_filter ip6table_nat
	ip6table_mangle xt_comment xt_statistic xt_mark xt_addrtype xt_conntrack xt_MASQUERADE xt_recent
	xt_nat xt_multiport xt_tcpudp xt_REDIRECT xt_physdev xt_set ipt_REJECT ip6t_REJECT nf_tables nft_compat
	nft_chain_nat nft_ct nft_masq nft_nat nft_redir nft_reject_inet nft_limit nft_numgen)
mdir=$kdir/lib/modules/$kver
declare -A mod_path=()
while IFS=: read -r path _; do
	name=${path##*/}
	name=${name%%.ko*}
	mod_path[${name//-/_}]=$path
done <"$mdir/modules.dep"
declare -A mod_deps=()
while IFS=: read -r path deps; do
	mod_deps[$path]=$deps
done <"$mdir/modules.dep"
declare -A placed=()
load_order=()
# place MODULE_PATH: its dependencies first (depth first), then itself.
place() {
	local path=$1 dep
	[[ -z ${placed[$path]:-} ]] || return 0
	placed[$path]=1
	for dep in ${mod_deps[$path]}; do place "$dep"; done
	mkdir -p "$(dirname "$root/lib/modules/$kver/$path")"
	cp "$mdir/$path" "$root/lib/modules/$kver/$path"
	load_order+=("$path")
}
for m in "${want_modules[@]}"; do
	if [[ -n ${mod_path[$m]:-} ]]; then
		place "${mod_path[$m]}"
	elif ! grep -q "/$m.ko" "$mdir/modules.builtin" 2>/dev/null; then
		echo "vm-lane: note: kernel $kver has no module $m" >&2
	fi
done
cp "$mdir"/modules.{order,builtin,builtin.modinfo} "$root/lib/modules/$kver/" 2>/dev/null || true
"$busybox" depmod -b "$root" "$kver" || die "depmod of the packed modules failed"
modules=()
for path in "${load_order[@]}"; do
	name=${path##*/}
	modules+=("${name%%.ko*}")
done

# A minimal /etc for programs that look up users, hosts and the machine id.
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
printf '127.0.0.1 localhost skiff-vm\n::1 localhost\n' >"$root/etc/hosts"
printf 'passwd: files\ngroup: files\nhosts: files\n' >"$root/etc/nsswitch.conf"
: >"$root/etc/resolv.conf"
tr -d - </proc/sys/kernel/random/uuid >"$root/etc/machine-id"

install -m 0755 "$here/init" "$root/init"
{
	printf 'LANE_MODULES=%q\n' "${modules[*]}"
	printf 'LANE_COUNT=%d\n' "${#lane_tests[@]}"
	for i in "${!lane_tests[@]}"; do
		printf 'LANE_TEST_%d=%q\nLANE_DIR_%d=%q\n' $((i + 1)) "${lane_tests[$i]}" $((i + 1)) "${lane_dirs[$i]}"
	done
	# Quoted once here, word-split by eval in the init: filters may hold spaces.
	args=""
	for f in "${filters[@]}"; do args+="$(printf '%q' "$f") "; done
	printf 'LANE_TEST_ARGS=%q\n' "$args"
	printf 'LANE_TEST_TIMEOUT=%q\n' "$test_timeout"
	for e in "${envs[@]}"; do printf 'export %s=%q\n' "${e%%=*}" "${e#*=}"; done
} >"$root/lane/config"

t0=$(date +%s.%N)
initrd=$work/initramfs.cpio
if ((compress)); then
	initrd=$initrd.gz
	(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 >"$initrd"
else
	(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet) >"$initrd"
fi
t1=$(date +%s.%N)
size=$(du -m "$initrd" | cut -f1)
echo "vm-lane: kernel $kver, ${#modules[@]} modules, ${#lane_tests[@]} test binaries," \
	"initramfs ${size} MiB built in $(secs "$t0" "$t1")s"

# --- Boot --------------------------------------------------------------------------------
# KVM only when it actually works: /dev/kvm can exist and open while running a guest fails or
# hangs (a nested or emulated host). The probe boots this kernel without a root file system:
# under a working KVM it panics ("VFS: Unable to mount root fs") within a second or two.
# A hanging probe spins a host CPU until its timeout, so its answer is kept for this host boot.
accel=tcg cpu=max
if [[ $want_accel != tcg && -r /dev/kvm && -w /dev/kvm ]]; then
	probe=$cache/kvm-probe.$(cat /proc/sys/kernel/random/boot_id)
	if [[ ! -f $probe ]]; then
		rm -f "$cache"/kvm-probe.*
		if timeout 8 qemu-system-x86_64 -machine q35,accel=kvm -cpu host -nodefaults -display none \
			-no-reboot -m 256M -kernel "$vmlinuz" -append "console=ttyS0 panic=-1 loglevel=1" \
			-serial stdio </dev/null 2>/dev/null | grep -q 'Kernel panic'; then
			echo kvm >"$probe"
		else
			echo tcg >"$probe"
		fi
	fi
	[[ $(cat "$probe") == kvm ]] && accel=kvm cpu=host
fi
[[ $want_accel == kvm && $accel != kvm ]] && skip "--accel kvm: /dev/kvm cannot run a guest here"
echo "vm-lane: accelerator $accel"

cmdline="console=ttyS0 panic=-1 loglevel=3 edd=off rdinit=/init"
t_boot=$(date +%s.%N)
qrc=0
# SIGTERM first: qemu exits cleanly on it; SIGKILL 10 s later if it does not.
timeout -k 10 "$timeout" qemu-system-x86_64 -machine "q35,accel=$accel" -cpu "$cpu" \
	-m "$memory" -smp "$smp" -nographic -serial mon:stdio -no-reboot -nodefaults \
	-kernel "$vmlinuz" -initrd "$initrd" -append "$cmdline" </dev/null |
	sed -u 's/\r$//; s/\x1b\[[0-9;?]*[A-Za-z]//g; s/\x1bc//g' | tee "$work/console.log" ||
	qrc=${PIPESTATUS[0]}
t_end=$(date +%s.%N)

elapsed=$(secs "$t_boot" "$t_end")
# The console may stop mid-line (a timeout, a panic): start the verdict on a line of its own.
[[ -s $work/console.log && -n $(tail -c1 "$work/console.log") ]] && echo
boot=$(awk '/^skiff-vm: boot done in/ { sub(/s;.*/, "", $5); print $5; exit }' "$work/console.log")
if [[ -n ${SKIFF_SKIP_LOG:-} ]]; then
	sed -n 's/^SKIFF-VM-SKIP: /[vm] /p' "$work/console.log" >>"$SKIFF_SKIP_LOG"
fi
code=$(sed -n 's/^SKIFF-VM-EXIT: \([0-9]\{1,3\}\)$/\1/p' "$work/console.log" | tail -n1)
if [[ -z $code ]]; then
	if ((qrc == 124 || qrc == 137)); then
		echo "vm-lane: exit 124 after ${elapsed}s: the VM did not finish within --timeout ${timeout}s"
		exit 124
	fi
	echo "vm-lane: exit 70 after ${elapsed}s: the VM stopped (qemu exit $qrc) without reporting an exit code"
	exit 70
fi
echo "vm-lane: exit $code after ${elapsed}s (guest boot ${boot:-?}s, accel $accel)"
exit "$code"
