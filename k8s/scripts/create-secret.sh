#!/usr/bin/env bash
# Create or update the `warehouse-credentials` Secret from the environment, so that no credential
# is ever written to a file in the repository. Idempotent: re-running updates the Secret in place.
#
#   PGUSER=... PGPASSWORD=... PGDATABASE=... k8s/scripts/create-secret.sh
#
# Read from the environment:
#   PGUSER, PGPASSWORD, PGDATABASE   required
#   PGSSLMODE                        default: prefer
#   K8S_PGHOST, K8S_PGPORT           the warehouse address as the PODS see it (default warehouse:5432,
#                                    the Service both overlays define); the host's PGHOST/PGPORT are
#                                    deliberately not used: they name the warehouse as the host sees it.
#   K8S_NAMESPACE                    default: ml-pipeline
#   KUBECTL                          default: kubectl (any extra flags, e.g. "kubectl --context kind-ml-pipeline")
#   K8S_SECRET_PRINT=1               print the Secret manifests instead of applying them (review, sealing)
#   AIRFLOW_METADATA=1               also create `airflow-metadata` (key `connection`), the metadata
#                                    database URL for Airflow installed with k8s/airflow/values.yaml
# Exit codes: 2 = a required variable is missing; otherwise kubectl's.
set -euo pipefail

namespace="${K8S_NAMESPACE:-ml-pipeline}"
read -r -a kubectl <<<"${KUBECTL:-kubectl}"

missing=()
for var in PGUSER PGPASSWORD PGDATABASE; do
  [[ -n "${!var:-}" ]] || missing+=("$var")
done
if (( ${#missing[@]} )); then
  echo "create-secret: missing environment variable(s): ${missing[*]} (export the warehouse credentials first)" >&2
  exit 2
fi

host="${K8S_PGHOST:-warehouse}"
port="${K8S_PGPORT:-5432}"

# Values go through an env file on a pipe (never the command line, where `ps` would show them), and
# `create --dry-run=client -o yaml | apply` creates or updates without storing them in any file.
apply() {
  if [[ "${K8S_SECRET_PRINT:-0}" == 1 ]]; then cat; else "${kubectl[@]}" apply -f -; fi
}

"${kubectl[@]}" create secret generic warehouse-credentials --namespace "$namespace" \
  --from-env-file=<(printf '%s=%s\n' PGHOST "$host" PGPORT "$port" PGDATABASE "$PGDATABASE" \
    PGUSER "$PGUSER" PGPASSWORD "$PGPASSWORD" PGSSLMODE "${PGSSLMODE:-prefer}") \
  --dry-run=client -o yaml | apply

if [[ "${AIRFLOW_METADATA:-0}" == 1 ]]; then
  [[ "${K8S_SECRET_PRINT:-0}" == 1 ]] && echo "---"
  url="$(H="$host" P="$port" python3 -c 'import os, urllib.parse as u
e = os.environ
q = lambda s: u.quote(s, safe="")
print("postgresql://%s:%s@%s:%s/airflow" % (q(e["PGUSER"]), q(e["PGPASSWORD"]), e["H"], e["P"]))')"
  "${kubectl[@]}" create secret generic airflow-metadata --namespace "$namespace" \
    --from-env-file=<(printf 'connection=%s\n' "$url") \
    --dry-run=client -o yaml | apply
fi
