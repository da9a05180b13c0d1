//! skiff-netlab: pod networking (bridge, veth, routes, netns, IPAM) and the kube-proxy
//! iptables rule builder. Filled by the networking issue.
#![deny(unsafe_code)]
