//! skiff-kubelet: the node agent. Talks to the apiserver only through a Kubernetes client.
//! Filled by the kubelet issue.
#![forbid(unsafe_code)]
