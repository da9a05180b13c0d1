#!/usr/bin/env bash
# Gives each worker the control plane's kubeconfig, from the host, after `vagrant up`:
#
#   cd vagrant && ./join.sh            # every running workerN
#   ./join.sh worker2                  # one worker
#
# Vagrant's rsync folders only copy host -> guest, and the kubeconfig (with the token the
# apiserver made at first start) exists only on the control node, so it travels through
# `vagrant ssh` here. Re-running provisioning then enables the node agents that this build
# of skiff has (see provision.sh).
set -euo pipefail
cd "$(dirname "$0")"
kubeconfig=$(vagrant ssh control -c 'sudo cat /var/lib/skiff/admin.kubeconfig' 2>/dev/null | tr -d '\r')
[[ $kubeconfig == *"server: https://"* ]] || {
	echo "join.sh: no kubeconfig on control (is it up and provisioned? vagrant up control)" >&2
	exit 69
}
if (($#)); then
	workers=("$@")
else
	mapfile -t workers < <(vagrant status --machine-readable | awk -F, '$3 == "state" && $4 == "running" && $2 ~ /^worker[0-9]+$/ { print $2 }')
fi
for w in "${workers[@]}"; do
	[[ $w =~ ^worker[0-9]+$ ]] || { echo "join.sh: '$w' is not a worker name (worker1, worker2, ...)" >&2; exit 64; }
	printf '%s\n' "$kubeconfig" |
		vagrant ssh "$w" -c 'sudo install -d -m 0700 /var/lib/skiff && sudo tee /var/lib/skiff/kubelet.kubeconfig >/dev/null && sudo chmod 0600 /var/lib/skiff/kubelet.kubeconfig'
	vagrant provision "$w"
	echo "join.sh: $w has the kubeconfig"
done
