#!/usr/bin/env bash
# Build the test bed's binaries into OUTDIR:
#   kube-apiserver, kube-controller-manager  (k8s.io/kubernetes at the version pinned in go.mod)
#   kubectl                                  (same version, for debugging: scripts/testbed kubectl)
#   testbed                                  (launcher: certificates, embedded etcd, supervision)
#   node-agent                               (stands in for the kubelet: runs pods as processes)
# Usage: hack/build.sh OUTDIR
set -euo pipefail
out=${1:?usage: $0 OUTDIR}
cd "$(dirname "$0")/.."
mkdir -p "$out"

k8s_version=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
minor=${k8s_version#v1.}; minor=${minor%%.*}
pkg=k8s.io/component-base/version
# What `kubectl version` and /version report; the same -X flags upstream's build sets.
ldflags="-s -w -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"

export CGO_ENABLED=0
go build -trimpath -ldflags "$ldflags" -o "$out/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kubectl \
  ./cmd/testbed ./cmd/node-agent
echo "$k8s_version" > "$out/KUBERNETES_VERSION"
