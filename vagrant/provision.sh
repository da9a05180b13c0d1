#!/usr/bin/env bash
# Provisions one skiff node of the Vagrant cluster (run by Vagrant as root, again on
# `vagrant provision`: every step is idempotent).
#
#   provision.sh control|worker NODE_IP CONTROL_IP
#
# Installs the build dependencies and a Rust toolchain, builds skiff from /opt/skiff/src
# (rsynced from the host), installs it as /usr/local/bin/skiff with kubectl beside it, and
# installs the systemd units:
#   skiff-apiserver.service  control only, enabled: the embedded control plane
#   skiff-kubelet.service    every node, enabled once `skiff kubelet` exists and the node has
#                            /var/lib/skiff/kubelet.kubeconfig (vagrant/join.sh copies it)
#   skiff-proxy.service      every node, enabled once `skiff proxy` exists, same kubeconfig
set -euo pipefail

usage() { echo "usage: $0 control|worker NODE_IP CONTROL_IP" >&2; exit 64; }
(($# == 3)) || usage
role=$1 node_ip=$2 control_ip=$3
[[ $role == control || $role == worker ]] || { echo "provision.sh: role '$role' is not control or worker" >&2; usage; }
ip_re='^([0-9]{1,3}\.){3}[0-9]{1,3}$'
[[ $node_ip =~ $ip_re ]] || { echo "provision.sh: NODE_IP '$node_ip' is not an IPv4 address" >&2; usage; }
[[ $control_ip =~ $ip_re ]] || { echo "provision.sh: CONTROL_IP '$control_ip' is not an IPv4 address" >&2; usage; }

src=/opt/skiff/src
data=/var/lib/skiff
export DEBIAN_FRONTEND=noninteractive
log() { echo "provision($role $node_ip): $*"; }

log "apt packages"
apt-get update -qq
apt-get install -y -qq --no-install-recommends build-essential pkg-config libseccomp-dev \
	protobuf-compiler iptables iproute2 conntrack busybox-static ca-certificates curl git \
	python3 python3-pip >/dev/null

# skiff's rust-version is newer than Debian 12's rustc (1.63), so rustup's stable toolchain.
if ! command -v cargo >/dev/null && [[ ! -x /root/.cargo/bin/cargo ]]; then
	log "rust toolchain (rustup, stable, minimal profile)"
	curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
		sh -s -- -y --profile minimal --default-toolchain stable >/dev/null
fi
export PATH=/root/.cargo/bin:$PATH

log "building skiff (release)"
[[ -f $src/Cargo.toml ]] || { echo "provision.sh: $src/Cargo.toml missing: did the rsync folder sync?" >&2; exit 66; }
# The target dir lives outside the synced tree so `vagrant rsync` does not delete it.
CARGO_TARGET_DIR=/var/cache/skiff-build cargo build --release --manifest-path "$src/Cargo.toml" --bin skiff
install -m 0755 /var/cache/skiff-build/release/skiff /usr/local/bin/skiff
if [[ ! -x /usr/local/bin/kubectl ]]; then
	log "kubectl"
	bash "$src/tools/install-kubectl.sh" /usr/local/bin 37 >/dev/null
fi
install -d -m 0700 "$data"

# has_command NAME: whether this build of skiff has the subcommand yet.
has_command() { /usr/local/bin/skiff "$1" --help >/dev/null 2>&1; }

unit() {
	local name=$1
	cat >"/etc/systemd/system/$name"
}

if [[ $role == control ]]; then
	# Listening on the private address puts it in the serving certificate's names, and
	# admin.kubeconfig points at it, so the same kubeconfig works on every node.
	unit skiff-apiserver.service <<EOF
[Unit]
Description=skiff embedded control plane (apiserver, store, scheduler, controllers)
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=/usr/local/bin/skiff apiserver --data-dir $data --listen $control_ip:6443
Restart=on-failure
RestartSec=2
KillMode=mixed
TimeoutStopSec=30

[Install]
WantedBy=multi-user.target
EOF
fi

# The node agents: same flags as the upstream binaries they stand in for. Each node's pod CIDR
# is 10.244.<last octet of its address>.0/24, so no two nodes share one (routes between nodes'
# pod CIDRs are not made yet: pods reach pods on their own node and Services through NodePorts). Delegate=yes hands the kubelet its cgroup subtree
# (systemd.resource-control(5)), which the runtime nests pods under.
unit skiff-kubelet.service <<EOF
[Unit]
Description=skiff kubelet (node agent)
After=network-online.target skiff-apiserver.service
Wants=network-online.target
ConditionPathExists=$data/kubelet.kubeconfig

[Service]
ExecStart=/usr/local/bin/skiff kubelet --kubeconfig $data/kubelet.kubeconfig --node-name %H --node-ip $node_ip --root-dir $data --pod-cidr 10.244.${node_ip##*.}.0/24
Restart=on-failure
RestartSec=2
Delegate=yes
KillMode=process

[Install]
WantedBy=multi-user.target
EOF
unit skiff-proxy.service <<EOF
[Unit]
Description=skiff proxy (kube-proxy iptables mode)
After=network-online.target skiff-kubelet.service
Wants=network-online.target
ConditionPathExists=$data/kubelet.kubeconfig

[Service]
ExecStart=/usr/local/bin/skiff proxy --kubeconfig $data/kubelet.kubeconfig --node-name %H
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
EOF
systemctl daemon-reload

if [[ $role == control ]]; then
	systemctl enable skiff-apiserver.service >/dev/null 2>&1
	systemctl restart skiff-apiserver.service
	for _ in $(seq 1 60); do
		[[ -f $data/admin.kubeconfig ]] && break
		sleep 1
	done
	[[ -f $data/admin.kubeconfig ]] || {
		echo "provision.sh: the apiserver wrote no $data/admin.kubeconfig in 60s:" >&2
		journalctl -u skiff-apiserver.service -n 30 --no-pager >&2
		exit 1
	}
	install -d -m 0700 /root/.kube /home/vagrant/.kube
	install -m 0600 "$data/admin.kubeconfig" /root/.kube/config
	install -m 0600 -o vagrant -g vagrant "$data/admin.kubeconfig" /home/vagrant/.kube/config
	chown vagrant:vagrant /home/vagrant/.kube
	# The control node runs pods too, as a kubeadm control plane without taints would.
	[[ -f $data/kubelet.kubeconfig ]] || install -m 0600 "$data/admin.kubeconfig" "$data/kubelet.kubeconfig"
fi

for agent in kubelet proxy; do
	if has_command "$agent"; then
		systemctl enable "skiff-$agent.service" >/dev/null 2>&1
		systemctl restart "skiff-$agent.service"
		log "skiff-$agent.service enabled"
	else
		systemctl disable --now "skiff-$agent.service" >/dev/null 2>&1 || true
		log "skiff-$agent.service installed but disabled: this skiff has no '$agent' command yet"
	fi
done
log "done"
