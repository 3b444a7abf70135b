# Kubernetes targets: a local kind cluster, the images loaded into it, the manifests deployed,
# one DAG run against it, and the offline checks. Included by the top-level Makefile
# (`include k8s/kind.mk`); run from the repository root. Recipes are POSIX sh.
#
#   make kind-up                      create the cluster (k8s/kind/cluster.yaml)
#   make images kind-load             build the stage images, copy them (and the XCom sidecar) into the node
#   make kind-deploy                  namespace, RBAC, policies, warehouse, Secrets (PG* from the environment)
#   make kind-run DS=2024-03-01       run the DAG for that date on the cluster, print the prediction summary
#   make kind-down                    delete the cluster
#   make k8s-validate                 offline: render, schema-validate and policy-check k8s/

KIND ?= kind
KUBECTL ?= kubectl
DOCKER ?= docker
UV ?= uv
KIND_CLUSTER ?= ml-pipeline
KUBE_CONTEXT ?= kind-$(KIND_CLUSTER)
K8S_NAMESPACE ?= ml-pipeline
KCTL = $(KUBECTL) --context $(KUBE_CONTEXT) --namespace $(K8S_NAMESPACE)
# Stage images as `make images` tags them; the kind overlay (k8s/overlays/kind) names the same tag.
IMAGE_TAG ?= 0.1.0
K8S_STAGES := dbt ingest trainer predictor
# KubernetesPodOperator's XCom sidecar only needs `sh`; pinned, mirrored under a local name so the
# node never pulls it (the Airflow connection extra `xcom_sidecar_container_image` points at it).
XCOM_SIDECAR_UPSTREAM ?= alpine:3.24.2
XCOM_SIDECAR_IMAGE ?= ml-pipeline/xcom-sidecar:3.24.2
WAREHOUSE_IMAGE ?= postgres:18.1
LANDING_DIR ?= .data/landing
KIND_WAREHOUSE_PORT ?= 15432
PIPELINE_DAG_ID ?= ml_pipeline
KIND_AIRFLOW_HOME ?= $(CURDIR)/.airflow/kind
KIND_KUBECONFIG ?= $(or $(firstword $(subst :, ,$(KUBECONFIG))),$(HOME)/.kube/config)

# The XCom sidecar as the stage pods' policy wants it: limits set, non-root, read-only, no capabilities.
# Same values as k8s/airflow/values.yaml (tests/k8s checks they agree).
XCOM_SIDECAR_RESOURCES := {\"requests\": {\"cpu\": \"10m\", \"memory\": \"16Mi\"}, \"limits\": {\"cpu\": \"100m\", \"memory\": \"64Mi\"}}
XCOM_SIDECAR_SECURITY := {\"runAsNonRoot\": true, \"runAsUser\": 65534, \"allowPrivilegeEscalation\": false, \"readOnlyRootFilesystem\": true, \"capabilities\": {\"drop\": [\"ALL\"]}}
KIND_CONNECTION = {"conn_type": "kubernetes", "extra": {"in_cluster": false, "kube_config_path": "$(KIND_KUBECONFIG)", "cluster_context": "$(KUBE_CONTEXT)", "namespace": "$(K8S_NAMESPACE)", "xcom_sidecar_container_image": "$(XCOM_SIDECAR_IMAGE)", "xcom_sidecar_container_resources": "$(XCOM_SIDECAR_RESOURCES)", "xcom_sidecar_container_security_context": "$(XCOM_SIDECAR_SECURITY)"}}

define require_tools
	@for tool in $(1); do command -v $$tool >/dev/null 2>&1 || { \
	  echo "$@: '$$tool' is not on PATH; the kind workflow needs docker, kind and kubectl (see docs/kubernetes.md)" >&2; exit 127; }; done
endef

.PHONY: kind-up kind-load kind-deploy k8s-secret kind-run kind-connection kind-down k8s-validate

kind-up: ## create the local kind cluster (landing folder mounted, warehouse on 127.0.0.1:15432)
	$(call require_tools,$(DOCKER) $(KIND) $(KUBECTL))
	@mkdir -p $(LANDING_DIR) dags
	@if $(KIND) get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)'; then \
	  echo "kind cluster '$(KIND_CLUSTER)' already exists"; \
	else $(KIND) create cluster --name $(KIND_CLUSTER) --config k8s/kind/cluster.yaml --wait 120s; fi
	@$(KUBECTL) --context $(KUBE_CONTEXT) get nodes

kind-load: ## copy the four stage images, the XCom sidecar and PostgreSQL into the kind node
	$(call require_tools,$(DOCKER) $(KIND))
	@for stage in $(K8S_STAGES); do image=ml-pipeline/$$stage:$(IMAGE_TAG); \
	  $(DOCKER) image inspect $$image >/dev/null 2>&1 || { echo "kind-load: image $$image not found: run 'make images' first" >&2; exit 1; }; done
	@$(DOCKER) image inspect $(XCOM_SIDECAR_IMAGE) >/dev/null 2>&1 || { \
	  $(DOCKER) pull $(XCOM_SIDECAR_UPSTREAM) && $(DOCKER) tag $(XCOM_SIDECAR_UPSTREAM) $(XCOM_SIDECAR_IMAGE); }
	@$(DOCKER) image inspect $(WAREHOUSE_IMAGE) >/dev/null 2>&1 || $(DOCKER) pull $(WAREHOUSE_IMAGE)
	$(KIND) load docker-image --name $(KIND_CLUSTER) $(foreach s,$(K8S_STAGES),ml-pipeline/$(s):$(IMAGE_TAG)) $(XCOM_SIDECAR_IMAGE) $(WAREHOUSE_IMAGE)

kind-deploy: ## apply the kind overlay, create the Secrets from PG*, wait for the warehouse
	$(call require_tools,$(KUBECTL))
	$(KUBECTL) --context $(KUBE_CONTEXT) apply -k k8s/overlays/kind
	@if [ -z "$$PGPASSWORD" ] && $(KCTL) get secret warehouse-credentials >/dev/null 2>&1; then \
	  echo "secret/warehouse-credentials exists (export PGUSER, PGPASSWORD, PGDATABASE to replace it)"; \
	else KUBECTL="$(KUBECTL) --context $(KUBE_CONTEXT)" K8S_NAMESPACE=$(K8S_NAMESPACE) AIRFLOW_METADATA=1 k8s/scripts/create-secret.sh; fi
	$(KCTL) rollout status statefulset/warehouse --timeout=300s

k8s-secret: ## create/update Secret warehouse-credentials from PGUSER, PGPASSWORD, PGDATABASE (never stored in a file)
	@KUBECTL="$(KUBECTL) --context $(KUBE_CONTEXT)" K8S_NAMESPACE=$(K8S_NAMESPACE) k8s/scripts/create-secret.sh

kind-connection: ## print the Airflow connection (kubernetes_default) for Airflow on the host talking to kind
	@printf '%s\n' '$(KIND_CONNECTION)'

kind-run: ## run the DAG for DS=YYYY-MM-DD on the kind cluster (Airflow on the host) and print the summary
	@case "$(DS)" in [0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]) ;; \
	  *) echo "kind-run: give the logical date, e.g. make kind-run DS=2024-03-01" >&2; exit 2;; esac
	$(call require_tools,$(KUBECTL) $(UV))
	@$(KCTL) get configmap pipeline-config >/dev/null 2>&1 || { echo "kind-run: nothing deployed: run 'make kind-deploy' first" >&2; exit 1; }
	@set -e; \
	  eval "$$($(KCTL) get configmap pipeline-config -o go-template='{{range $$k, $$v := .data}}export {{$$k}}={{$$v}}{{"\n"}}{{end}}')"; \
	  secret() { $(KCTL) get secret warehouse-credentials -o "jsonpath={.data.$$1}" | base64 -d; }; \
	  export PGHOST=127.0.0.1 PGPORT=$(KIND_WAREHOUSE_PORT) PGUSER="$$(secret PGUSER)" PGPASSWORD="$$(secret PGPASSWORD)" PGDATABASE="$$(secret PGDATABASE)"; \
	  export AIRFLOW_HOME="$(KIND_AIRFLOW_HOME)" AIRFLOW__CORE__DAGS_FOLDER="$(CURDIR)/dags" AIRFLOW__CORE__LOAD_EXAMPLES=False; \
	  export AIRFLOW_CONN_KUBERNETES_DEFAULT='$(KIND_CONNECTION)'; \
	  mkdir -p "$$AIRFLOW_HOME"; \
	  echo "== airflow dags test $(PIPELINE_DAG_ID) $(DS) (stage pods in namespace $(K8S_NAMESPACE), context $(KUBE_CONTEXT))"; \
	  $(UV) run --quiet --project dags airflow db migrate >/dev/null; \
	  $(UV) run --quiet --project dags airflow dags test $(PIPELINE_DAG_ID) $(DS)
	@echo "== prediction batches for $(DS)"
	@printf '%s\n' "select as_of_date, model_version, count(*) as shards, sum(rows) as rows, \
	  round(max(psi)::numeric, 4) as psi, bool_or(drift) as drift from ml.prediction_batches \
	  where as_of_date = date '$(DS)' group by as_of_date, model_version;" \
	| $(KCTL) exec -i statefulset/warehouse -c postgres -- sh -c 'psql -v ON_ERROR_STOP=1 -U "$$POSTGRES_USER" -d "$$POSTGRES_DB"'

kind-down: ## delete the kind cluster (the landing folder on the host is kept)
	$(call require_tools,$(KIND))
	$(KIND) delete cluster --name $(KIND_CLUSTER)

k8s-validate: ## offline: render both overlays, validate against the pinned schema, check the security policy
	$(UV) run --quiet --project k8s pytest tests/k8s -q
