#!/usr/bin/env bash
# The Kubernetes control plane the cluster tests and bench/cluster.ts run, built from the Go
# module proxy through the wrapper modules in tools/kube/ (their go.sum pins every digest):
#   .tools/kube/etcd   etcd (go.etcd.io/etcd/server/v3)
#   .tools/kube/kube   kube-apiserver, kube-scheduler and kube-controller-manager in one binary
#                      (the first argument picks one), so their shared packages compile once.
# Skipped when the stamp names the same versions and wrapper sources. Builds run at the lowest
# priority: they take minutes of CPU on a small machine that others share.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
tools="${LJ_TOOLS_DIR:-$here/.tools}"
out="$tools/kube"
say() { printf '[kube-tools] %s\n' "$*" >&2; }

command -v go >/dev/null || { say "no Go toolchain: skipping the Kubernetes control plane (the cluster tests will fail)"; exit 0; }

# The wrapper modules pin the versions (etcd v3.7.3, Kubernetes v1.37.2); the stamp is their hash.
want=$(cat "$here"/tools/kube/etcd/{go.mod,go.sum,main.go} "$here"/tools/kube/k8s/{go.mod,go.sum,main.go} | sha256sum | cut -d' ' -f1)
if [ "$(cat "$out/.stamp" 2>/dev/null)" = "$want" ] && [ -x "$out/etcd" ] && [ -x "$out/kube" ]; then exit 0; fi

export GOPATH="$tools/go" GOMODCACHE="$tools/go/mod" GOFLAGS="-modcacherw -mod=readonly" GOTOOLCHAIN=local
mkdir -p "$out"
build() { # NAME MODULE-DIR
  say "building $1 (a few minutes)"
  (cd "$here/tools/kube/$2" && nice -n 19 go build -trimpath -ldflags='-s -w' -o "$out/$1.new" .)
  mv "$out/$1.new" "$out/$1"
}
build etcd etcd
build kube k8s
echo "$want" >"$out/.stamp"
