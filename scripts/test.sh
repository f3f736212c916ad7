#!/usr/bin/env bash
# The test command of the README. On a fresh machine it first installs what
# the tests use (real peers and servers, not mocks), then runs go vet and the
# whole suite with the race detector. Extra arguments go to `go test`.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
/usr/bin/python3 -c 'import websockets' 2>/dev/null || need+=(python3-websockets)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light) # bench/ compares against it
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy) # and against HAProxy
# e2e/faults_test.go: network namespaces and veth pairs (ip), mount
# namespaces (unshare), a loop device (mount -o loop) holding ext4.
command -v ip >/dev/null || [ -x /usr/sbin/ip ] || need+=(iproute2)
command -v unshare >/dev/null || need+=(util-linux)
command -v losetup >/dev/null || [ -x /usr/sbin/losetup ] || need+=(mount)
command -v mkfs.ext4 >/dev/null || [ -x /usr/sbin/mkfs.ext4 ] || need+=(e2fsprogs)
[ -x /usr/bin/redis-server ] || need+=(redis-server) # cluster mode: a real server, a real Redis Cluster
[ -x /usr/bin/redis-sentinel ] || need+=(redis-sentinel)
[ -x /usr/bin/promtool ] || need+=(prometheus) # e2e/dashboard_test.go: promtool checks deploy/prometheus's rules
# e2e/frameworks_test.go: the chat frameworks' own servers and clients (npm).
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if ((${#need[@]})); then
	if [ "$(id -u)" = 0 ]; then
		echo "installing test dependencies: ${need[*]}" >&2
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
	else
		echo "the tests need Debian packages that are missing; install them with:" >&2
		echo "  sudo apt-get install -y ${need[*]}" >&2
		exit 1
	fi
fi

# The framework peers, exactly as the committed lock file says; no
# install scripts run. The Centrifuge server is a module of its own.
if ! cmp -s e2e/frameworks/package-lock.json e2e/frameworks/node_modules/.installed-from-lock 2>/dev/null; then
	(cd e2e/frameworks && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error &&
		cp package-lock.json node_modules/.installed-from-lock)
fi
(cd e2e/frameworks/centrifuge-server && go mod download)

gofmt_out=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$gofmt_out" ]; then
	echo "gofmt needed on:" >&2
	echo "$gofmt_out" >&2
	exit 1
fi
go vet ./...
go test -race -count=1 -timeout 14m "$@" ./...
# The proxy's suite once more on the goroutine relay, which TLS upstreams
# and non-Linux builds use (docs/ARCHITECTURE.md, "Memory per connection").
PROXY_TEST_RELAY=goroutines go test -race -count=1 "$@" ./proxy
# The soak's short run (about 40 s; README, Tests): prints its figures, fails on growth or a wrong count.
go run ./cmd/soak
# Cluster mode's load test, short run (about 45 s; README, Tests): three replicas on one Redis,
# sessions churning, one replica killed and restarted; fails on any missing, duplicate or early
# notification.
go run ./cmd/clusterload
# The benchmark harness (its own module) at a tiny size, so it cannot rot.
(cd bench && PATH="$PATH:/usr/sbin" WSBENCH_REQUIRE_NGINX=1 go test -count=1 ./...)
# Memory and allocation figures are distorted by the race detector, so the
# tests that pin them are built only without it (//go:build !race): here.
go test -count=1 -run '^(TestMemoryPerSession|TestDeflateMemory|TestInflightMemory|TestNoAllocs|TestRelayNoAllocs|TestEngineNoAllocs)$' -v ./presence ./proxy ./proxy/wsframe | grep -E '^(=== RUN|--- |ok|FAIL|PASS)|bytes per'
