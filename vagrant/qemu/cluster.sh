#!/bin/sh
# shellcheck disable=SC2317 # functions run indirectly, through wait_for
# The one-node cluster inside the VM lane (lane.sh --suite cluster; runs in the guest, where
# the init starts it like a test binary, alone in its leaf cgroup /skiff-lane/t<N>).
#
# The guest is a real host of its own, so nothing is namespaced away: `skiff up` runs in the
# guest's root network namespace with the node address on a dummy interface, the README's
# examples/hello-nodeport.yaml is applied with the real kubectl, and the NodePort is fetched
# from the VM itself (OUTPUT → KUBE-SERVICES → KUBE-NODEPORTS → a pod on the bridge). Then it
# checks the pods' cgroup v2 files, stops `skiff up` with SIGTERM and checks that it exits 0
# and leaves no pod cgroup, mount, bridge or KUBE-/SKIFF- chain behind.
#
# It prints cargo's test lines ("test NAME ... ok", "test result: ...") so the lane's and
# skiff.sh's summaries count it like a Rust test. Arguments (--include-ignored ...) are
# ignored. Needs curl and (lane.sh exports them) SKIFF_KUBECTL, SKIFF_VM_BUSYBOX_LAYOUT, the
# repository at SKIFF_VM_TOP.

name=vm_cluster_serves_the_hello_nodeport_and_stops_clean
node_ip=192.168.250.1
work=/tmp/skiff-cluster
up_pid=''

now() { cut -d' ' -f1 /proc/uptime; }
t0=$(now)
since() { awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
say() { echo "cluster: [$(since)s] $*"; }

printf '\nrunning 1 test\n'
finish() {
	if [ "$1" = ok ]; then
		printf 'test %s ... ok\n\n' "$name"
		printf 'test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in %ss\n\n' "$(since)"
		exit 0
	fi
	printf 'test %s ... FAILED\n\n' "$name"
	printf 'test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in %ss\n\n' "$(since)"
	exit 101
}
fail() {
	say "FAILED: $*"
	for f in up.out up.err data/log/kubelet.log data/log/proxy.log; do
		[ -f "$work/$f" ] && { echo "--- $f (last 40 lines)"; tail -n 40 "$work/$f"; }
	done
	[ -n "$KUBECONFIG" ] && "$kubectl" get pods -o wide 2>&1
	if [ -n "$up_pid" ] && kill -0 "$up_pid" 2>/dev/null; then
		# SIGTERM drains the pods and stops the kubelet and proxy; the VM powers off after.
		kill -TERM "$up_pid"
		wait_for 150 "skiff up to exit after SIGTERM" sh -c "! kill -0 $up_pid 2>/dev/null"
	fi
	finish failed
}
# wait_for SECS WHAT COMMAND...: polls COMMAND every second until it succeeds.
wait_for() {
	secs=$1 what=$2
	shift 2
	i=0
	until "$@" >/dev/null 2>&1; do
		i=$((i + 1))
		[ "$i" -ge "$secs" ] && return 1
		sleep 1
	done
	say "$what after ${i}s"
}

kubectl=${SKIFF_KUBECTL:?SKIFF_KUBECTL is not set: lane.sh --suite cluster exports it}
layout=${SKIFF_VM_BUSYBOX_LAYOUT:?SKIFF_VM_BUSYBOX_LAYOUT is not set}
top=${SKIFF_VM_TOP:?SKIFF_VM_TOP is not set}
if ! command -v curl >/dev/null; then
	# The host had none to pack (lane.sh): this host lacks something, an explicit skip.
	echo "$name: curl is not installed on the host (apt-get install curl)" >>"${SKIFF_SKIP_LOG:-/dev/null}"
	say "skipped: curl is not installed on the host"
	finish ok
fi
[ -x "$kubectl" ] || fail "no kubectl at $kubectl"
[ -f "$layout/index.json" ] || fail "no OCI layout at $layout"

# The node's own address: a dummy interface stands in for the NIC the guest has not got
# (qemu runs with -nodefaults); what the proxy does with it is what it does with a NIC's.
ip link add skiffvm0 type dummy || fail "ip link add skiffvm0 type dummy"
ip addr add "$node_ip/24" dev skiffvm0 || fail "ip addr add $node_ip/24"
ip link set skiffvm0 up || fail "ip link set skiffvm0 up"

mkdir -p "$work"
cg=$(sed -n 's/^0:://p' /proc/self/cgroup)
# The kubelet's default --cgroup-root `skiff`, which on cgroup v2 the runtime nests below the
# *parent* of the caller's cgroup (docs/cgroups.md): /skiff-lane/skiff here. Only this run's
# tree is looked at: earlier tests in this VM may have left theirs elsewhere.
tree=/sys/fs/cgroup${cg%/*}/skiff
say "skiff up in cgroup $cg, node ip $node_ip, pods below ${tree#/sys/fs/cgroup}"
skiff up --data-dir "$work/data" --node-ip "$node_ip" \
	--image "skiff.local/busybox:1=$layout" >"$work/up.out" 2>"$work/up.err" &
up_pid=$!
ready() {
	grep -q '^ *export KUBECONFIG=' "$work/up.out" || ! kill -0 "$up_pid"
}
wait_for 300 "node Ready (skiff up printed its kubeconfig)" ready || fail "no node Ready in 300 s"
kill -0 "$up_pid" 2>/dev/null || { up_pid=''; fail "skiff up exited before its node was Ready"; }
KUBECONFIG=$(sed -n 's/^ *export KUBECONFIG=//p' "$work/up.out" | head -n1)
export KUBECONFIG

"$kubectl" apply -f "$top/examples/hello-nodeport.yaml" || fail "kubectl apply"
"$kubectl" wait --for=condition=Available deployment/hello --timeout=300s ||
	fail "deployment/hello not Available in 300 s"
say "deployment/hello Available"
answer=''
fetch() {
	answer=$(curl -sS -m 3 "http://$node_ip:30080/") && case $answer in
		"hello from hello-"*) true ;;
		*) false ;;
		esac
}
diagnose() {
	pod_ip=$("$kubectl" get pods -l app=hello -o 'jsonpath={.items[0].status.podIP}')
	echo "--- straight to the pod $pod_ip:8080:"
	curl -sS -m 3 "http://$pod_ip:8080/" 2>&1
	echo "--- nodeport again:"
	curl -sS -m 3 "http://$node_ip:30080/" 2>&1
	echo "--- nat (with counters):"
	iptables -t nat -L -n -v 2>&1
	ip -4 addr
	ip -4 route
	sysctl net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables 2>&1
}
wait_for 60 "NodePort $node_ip:30080 answered" fetch ||
	{ diagnose; fail "no answer from http://$node_ip:30080/ in 60 s"; }
say "answer: $answer"
iptables -t nat -S KUBE-NODEPORTS | grep -q -- '--dport 30080' ||
	{ iptables -t nat -S KUBE-NODEPORTS; fail "no KUBE-NODEPORTS rule for 30080"; }

# The pods are Burstable (requests 50m/16Mi, limits 200m/64Mi, every container limited): on
# cgroup v2 their pod cgroups get cpu.max and memory.max from the limits.
pods=0
for uid in $("$kubectl" get pods -l app=hello -o 'jsonpath={.items[*].metadata.uid}'); do
	d=$(find /sys/fs/cgroup -type d -name "pod$uid" | head -n1)
	[ -n "$d" ] || fail "no cgroup pod$uid under /sys/fs/cgroup"
	[ "$d" = "$tree/kubepods/burstable/pod$uid" ] || fail "pod$uid at $d, not below $tree/kubepods/burstable"
	[ "$(cat "$d/cpu.max")" = "20000 100000" ] || fail "$d/cpu.max is $(cat "$d/cpu.max"), want 20000 100000"
	[ "$(cat "$d/memory.max")" = 67108864 ] || fail "$d/memory.max is $(cat "$d/memory.max"), want 67108864"
	say "pod cgroup ${d#/sys/fs/cgroup}: cpu.max $(cat "$d/cpu.max"), memory.max $(cat "$d/memory.max")"
	pods=$((pods + 1))
done
[ "$pods" -eq 2 ] || fail "want 2 hello pods, found $pods"

# SIGTERM: drains the pods, stops the kubelet and proxy, takes the node network back.
kill -TERM "$up_pid"
wait "$up_pid"
rc=$?
up_pid=''
[ "$rc" -eq 0 ] || fail "skiff up exited $rc after SIGTERM"
say "skiff up stopped"
# The drained kubelet removes its empty QoS tree and the relative root it made.
[ ! -e "$tree" ] || fail "cgroups left: $(find "$tree" -type d)"
grep -q " $work/" /proc/self/mountinfo && { grep " $work/" /proc/self/mountinfo; fail "mounts left"; }
ip link show skiff0 >/dev/null 2>&1 && fail "the bridge skiff0 is still there"
chains=$(iptables-save | grep -E 'KUBE-|SKIFF-')
[ -z "$chains" ] || fail "chains left: $chains"
finish ok
