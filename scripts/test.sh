#!/usr/bin/env bash
# The test command of README.md: builds and runs every test of the workspace, including the
# replay of the committed fuzz corpus, the golden vectors of docs/protocol.md, and end-to-end
# tests against real servers the tests start themselves (redis-server, the gateway and
# reference backends, a DNS responder, and nginx and HAProxy for the benchmark comparison's
# smoke test, Prometheus and promtool for monitoring/), WebSocket tests with real clients (Python `websockets`, Node `ws`), the Autobahn
# TestSuite's cases (`kosoku`), and the
# TypeScript SDK's tests in clients/js. Installs what those need on a fresh Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v python3 >/dev/null || need+=(python3)
command -v nginx >/dev/null || need+=(nginx)
# nginx's stream proxy is a separate module package on Debian.
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
command -v haproxy >/dev/null || need+=(haproxy)
# Headless Chromium for the SDK's browser test (gateway/tests/websocket.rs).
command -v chromium >/dev/null || need+=(chromium)
# promtool and a real Prometheus for monitoring/'s rules and gateway/tests/monitoring.rs.
command -v promtool >/dev/null || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: install ${need[*]} (Debian packages) first, or run as root" >&2
    exit 1
  fi
  echo "==> installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# WebSocket clients written by others, for gateway/tests/websocket.rs.
python3 -c "import websockets" 2>/dev/null || python3 -m pip install -q "websockets==17.*" 2>&1 | grep -v "running pip as the 'root' user" || true
python3 -c "import websockets" || { echo "scripts/test.sh: pip install websockets failed" >&2; exit 1; }
# The Autobahn TestSuite's cases without Docker, for gateway/tests/autobahn.rs.
command -v kosoku >/dev/null || python3 -m pip install -q "kosoku==0.1.0" 2>&1 | grep -v "running pip as the 'root' user" || true
command -v kosoku >/dev/null || { hash -r; command -v kosoku >/dev/null; } || { echo "scripts/test.sh: pip install kosoku failed" >&2; exit 1; }
# Node packages: the SDK's, and `ws` for the Rust WebSocket tests (resolved from clients/js).
command -v node >/dev/null || { echo "scripts/test.sh: Node 20+ is needed (clients/js)" >&2; exit 1; }
# The SDK's browser bundle is what the Chromium test loads.
(cd clients/js && npm ci --no-audit --no-fund --loglevel=error && npm run --silent bundle)

cargo test --workspace --locked "$@"
# The SDK's own tests, then the SDK against real ringgate processes (the binary cargo just built).
(cd clients/js && npm test && npm run --silent test:gateway)
