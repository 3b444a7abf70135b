#!/bin/sh
# Builder-stage helper: run a command that downloads from a package index, trusting the system CA
# bundle plus the optional build secret `extra_ca_certs` (a PEM bundle of a TLS proxy's CA
# certificates: `make images EXTRA_CA_CERTS=...`). The secret is mounted only while the command
# runs, so no certificate and no credential ends up in a layer.
set -eu
bundle=/etc/ssl/certs/ca-certificates.crt
if [ -s /run/secrets/extra_ca_certs ]; then
  cat "$bundle" /run/secrets/extra_ca_certs > /tmp/ca-bundle.pem
  bundle=/tmp/ca-bundle.pem
fi
export SSL_CERT_FILE="$bundle" PIP_CERT="$bundle" REQUESTS_CA_BUNDLE="$bundle" UV_SYSTEM_CERTS=1
status=0
"$@" || status=$?
rm -f /tmp/ca-bundle.pem
exit "$status"
