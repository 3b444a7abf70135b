# Stage images: `make images` builds ml-pipeline/{ingest,dbt,trainer,predictor} one at a time and
# reports their sizes; `make base-image` builds a Python 3.11 base from Debian packages for machines
# that cannot pull `python:3.11-slim-bookworm`. Included by the top-level Makefile; see docs/images.md.
#
#   make images                                             base python:3.11-slim-bookworm (pulled)
#   make base-image && make images BASE_IMAGE=ml-pipeline/python-base:3.11-bookworm   offline
#   make images IMAGES="ingest dbt" EXTRA_CA_CERTS=/path/to/ca-folder-or-file

IMAGE_STAGES := ingest dbt trainer predictor
IMAGES ?= $(IMAGE_STAGES)
IMAGE_REPO ?= ml-pipeline
# The release tag: k8s/kind.mk loads it into kind and k8s/overlays/kind names it.
IMAGE_VERSION ?= 0.1.0
BASE_IMAGE ?= python:3.11-slim-bookworm
LOCAL_BASE_IMAGE ?= ml-pipeline/python-base:3.11-bookworm
DEBIAN_SUITE ?= bookworm
DEBIAN_MIRROR ?= http://deb.debian.org/debian
UV_IMAGE_VERSION ?= 0.13.9
# CA certificates of a TLS-intercepting proxy (a PEM file or a folder of *.crt), trusted while
# building; defaults to the folder update-ca-certificates reads, when it holds any certificate.
EXTRA_CA_CERTS ?= $(if $(shell find /usr/local/share/ca-certificates -name '*.crt' 2>/dev/null | head -1),/usr/local/share/ca-certificates)
IMAGE_REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
IMAGE_SHORT_REVISION ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
# Never a credential in a label: user:token@ is stripped from the remote's URL.
IMAGE_SOURCE ?= $(or $(shell git config --get remote.origin.url 2>/dev/null | sed -E 's#^git@([^:]+):#https://\1/#; s#://[^/@]*@#://#; s#\.git$$##'),unknown)
# BuildKit is needed (cache and secret mounts). A `docker` with buildx does it; without buildx,
# Debian's docker.io client (/usr/bin/docker, 20.10) has BuildKit built in.
IMAGES_DOCKER ?= $(shell if docker buildx version >/dev/null 2>&1; then echo docker; elif [ -x /usr/bin/docker ]; then echo /usr/bin/docker; else echo docker; fi)
# Size targets in MB (issue 7), reported by `make images` and asserted by tests/images (it reads these lines).
IMAGE_SIZE_LIMIT_ingest := 250
IMAGE_SIZE_LIMIT_dbt := 350
IMAGE_SIZE_LIMIT_trainer := 600
IMAGE_SIZE_LIMIT_predictor := 300

# Concatenate EXTRA_CA_CERTS (file or folder) into one PEM file: $(1) = where.
define collect_ca_certs
	if [ -d "$(EXTRA_CA_CERTS)" ]; then find "$(EXTRA_CA_CERTS)" -name '*.crt' -type f -exec cat {} + > $(1); \
	elif [ -f "$(EXTRA_CA_CERTS)" ]; then cat "$(EXTRA_CA_CERTS)" > $(1); \
	elif [ -n "$(EXTRA_CA_CERTS)" ]; then echo "EXTRA_CA_CERTS=$(EXTRA_CA_CERTS): no such file or folder" >&2; exit 2; fi
endef

.PHONY: images images-lint images-sizes base-image

images: ## build the four stage images one at a time (tags <git rev>, dev, 0.1.0); prints times and sizes
	@command -v $(IMAGES_DOCKER) >/dev/null 2>&1 || { echo "images: docker is not on PATH (see docs/images.md)" >&2; exit 127; }
	@set -e; ca=$$(mktemp); trap 'rm -f "$$ca"' EXIT; $(call collect_ca_certs,"$$ca"); \
	secret=""; if [ -s "$$ca" ]; then secret="--secret id=extra_ca_certs,src=$$ca"; echo "== trusting the CA certificates in $(EXTRA_CA_CERTS) while building"; fi; \
	for stage in $(IMAGES); do \
	  if [ ! -f $$stage/pyproject.toml ] || [ ! -f images/$$stage/Dockerfile ]; then \
	    echo "== $$stage: skipped ($$stage/pyproject.toml or images/$$stage/Dockerfile not in this checkout)"; continue; fi; \
	  echo "== $(IMAGE_REPO)/$$stage (base $(BASE_IMAGE))"; started=$$(date +%s); \
	  log=$$(mktemp); if ! DOCKER_BUILDKIT=1 $(IMAGES_DOCKER) build --progress=plain $$secret \
	    --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg UV_VERSION=$(UV_IMAGE_VERSION) \
	    --build-arg VERSION=$(IMAGE_VERSION) --build-arg REVISION=$(IMAGE_REVISION) --build-arg SOURCE=$(IMAGE_SOURCE) \
	    -f images/$$stage/Dockerfile \
	    -t $(IMAGE_REPO)/$$stage:$(IMAGE_SHORT_REVISION) -t $(IMAGE_REPO)/$$stage:dev -t $(IMAGE_REPO)/$$stage:$(IMAGE_VERSION) . > "$$log" 2>&1; then \
	    tail -40 "$$log" >&2; rm -f "$$log"; \
	    echo "images: building $$stage failed (rerun: DOCKER_BUILDKIT=1 $(IMAGES_DOCKER) build -f images/$$stage/Dockerfile .)" >&2; exit 1; fi; \
	  awk '/^#[0-9]+ \[(builder|runtime)/ {id=$$1; sub(/^#[0-9]+ /, ""); gsub(/ +/, " "); step[id]=substr($$0, 1, 100)} \
	    /^#[0-9]+ (DONE|CACHED)/ {if ($$1 in step) {print "  " step[$$1] "  " $$2 " " $$3; delete step[$$1]}}' "$$log" | sort -s -k1,1 -k2,2n; \
	  rm -f "$$log"; \
	  echo "== $(IMAGE_REPO)/$$stage built in $$(( $$(date +%s) - started )) s"; \
	done
	@$(MAKE) --no-print-directory images-sizes

images-sizes: ## print each stage image's size against its target
	@for stage in $(IMAGES); do \
	  case $$stage in ingest) limit=$(IMAGE_SIZE_LIMIT_ingest);; dbt) limit=$(IMAGE_SIZE_LIMIT_dbt);; \
	    trainer) limit=$(IMAGE_SIZE_LIMIT_trainer);; predictor) limit=$(IMAGE_SIZE_LIMIT_predictor);; esac; \
	  bytes=$$($(IMAGES_DOCKER) image inspect -f '{{.Size}}' $(IMAGE_REPO)/$$stage:$(IMAGE_VERSION) 2>/dev/null) || { echo "  $$stage: not built"; continue; }; \
	  mb=$$(( bytes / 1000000 )); verdict=ok; [ $$mb -le $$limit ] || verdict=OVER; \
	  printf '  %-28s %4d MB  (target <= %d MB: %s)\n' "$(IMAGE_REPO)/$$stage:$(IMAGE_VERSION)" $$mb $$limit $$verdict; \
	done

images-lint: ## hadolint every Dockerfile under images/
	$(UV) run --quiet --project . hadolint images/*/Dockerfile

base-image: ## build ml-pipeline/python-base:3.11-bookworm from Debian packages (debootstrap), trusting EXTRA_CA_CERTS
	@for tool in debootstrap $(IMAGES_DOCKER); do command -v $$tool >/dev/null 2>&1 || { \
	  echo "base-image: '$$tool' is not on PATH (Debian: apt-get install -y debootstrap docker.io)" >&2; exit 127; }; done
	@set -e; started=$$(date +%s); rootfs=$$(mktemp -d /tmp/ml-pipeline-rootfs.XXXXXX); log=$$rootfs.log; \
	trap 'rm -rf "$$rootfs" "$$log"' EXIT; \
	echo "== debootstrap $(DEBIAN_SUITE) (minbase + python3, python3-venv, ca-certificates) from $(DEBIAN_MIRROR)"; \
	debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates $(DEBIAN_SUITE) "$$rootfs" $(DEBIAN_MIRROR) > "$$log" 2>&1 \
	  || { tail -20 "$$log" >&2; echo "base-image: debootstrap failed" >&2; exit 1; }; \
	extra="$$rootfs/usr/local/share/ca-certificates/extra"; mkdir -p "$$extra"; \
	if [ -d "$(EXTRA_CA_CERTS)" ]; then find "$(EXTRA_CA_CERTS)" -name '*.crt' -type f -exec cp {} "$$extra/" \; ; \
	elif [ -f "$(EXTRA_CA_CERTS)" ]; then cp "$(EXTRA_CA_CERTS)" "$$extra/extra-ca-certs.crt"; \
	elif [ -n "$(EXTRA_CA_CERTS)" ]; then echo "EXTRA_CA_CERTS=$(EXTRA_CA_CERTS): no such file or folder" >&2; exit 2; fi; \
	[ -z "$$(ls -A "$$extra")" ] || echo "== trusting the CA certificates in $(EXTRA_CA_CERTS)"; \
	chroot "$$rootfs" update-ca-certificates --fresh > /dev/null 2>&1; \
	rm -rf "$$rootfs"/var/cache/apt/archives/*.deb "$$rootfs"/var/lib/apt/lists/* "$$rootfs"/var/cache/debconf/*-old "$$rootfs"/var/log/* \
	  "$$rootfs"/usr/share/doc/* "$$rootfs"/usr/share/man/* "$$rootfs"/usr/share/info/* "$$rootfs"/usr/share/locale/* "$$rootfs"/usr/share/lintian; \
	tar --numeric-owner -C "$$rootfs" -c . | $(IMAGES_DOCKER) import \
	  --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
	  --message "debootstrap --variant=minbase $(DEBIAN_SUITE) + python3 python3-venv ca-certificates" - $(LOCAL_BASE_IMAGE) > /dev/null; \
	echo "== $(LOCAL_BASE_IMAGE) built in $$(( $$(date +%s) - started )) s: $$($(IMAGES_DOCKER) run --rm $(LOCAL_BASE_IMAGE) python3 --version), $$(( $$($(IMAGES_DOCKER) image inspect -f '{{.Size}}' $(LOCAL_BASE_IMAGE)) / 1000000 )) MB"

# Publishing (users' CI, .github/workflows/ci.yml): PUSH_REPO=ghcr.io/acme/ml-pipeline; the images are
# pushed under the git revision, and under the release version only when asked (PUSH_TAGS).
PUSH_REPO ?=
PUSH_TAGS ?= $(IMAGE_SHORT_REVISION)

.PHONY: images-push
images-push: ## push the built images to PUSH_REPO (registry/namespace) with PUSH_TAGS (default: the git revision)
	@[ -n "$(PUSH_REPO)" ] || { echo "images-push: set PUSH_REPO, e.g. PUSH_REPO=ghcr.io/acme/ml-pipeline" >&2; exit 2; }
	@for stage in $(IMAGES); do for tag in $(PUSH_TAGS); do \
	  $(IMAGES_DOCKER) tag $(IMAGE_REPO)/$$stage:$(IMAGE_SHORT_REVISION) $(PUSH_REPO)/$$stage:$$tag && \
	  $(IMAGES_DOCKER) push --quiet $(PUSH_REPO)/$$stage:$$tag || exit 1; done; done
