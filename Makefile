# vps-gateway: build, test, run and regenerate. `make help` lists the targets.
SHELL := /bin/bash
PREFIX ?= /usr/local
DESTDIR ?=
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
# systemd-sysusers reads /usr/lib, /etc and /run only, whatever the PREFIX.
SYSUSERSDIR ?= /usr/lib/sysusers.d
SWIFT ?= swift
PROTOC_PLUGINS := .build-protoc/release
GENERATED := Sources/GatewayProtocol/Generated
PROTOS := proto/obiente/cloud/vpsgateway/v1/gateway.proto \
          proto/obiente/cloud/vps/v1/find_vps_by_lease.proto \
          proto/vpsgateway/admin/v1/admin.proto \
          proto/grpc/health/v1/health.proto

.PHONY: help deps build release test fuzz systemd-test verify-units run proto check-generated bench install clean

help:
	@echo "make run      - build, then run a gateway with three environment workers on sample inventories and look up a VPS"
	@echo "make test     - install what the tests need, build and run every test (what .ci/run does)"
	@echo "make build    - debug build;  make release - release build"
	@echo "make bench    - release build, then the benchmark table of the README"
	@echo "make proto    - regenerate $(GENERATED) from proto/ (needs protoc; builds the plugins)"
	@echo "make install  - release build, then install binary, migrations, units, system user and example config under \$$DESTDIR (PREFIX=/usr/local)"
	@echo "make fuzz     - libFuzzer on the lease-file and session-message targets, 10 min each (make test runs 60 s each)"
	@echo "make systemd-test - the end-to-end test under a real systemd (root, systemd-nspawn); part of make test"
	@echo "make verify-units - systemd-analyze verify (any output fails) and security --offline=yes on the installed units"

# Debian packages the build and the tests need. Installs them when run as root, otherwise
# prints the command to run.
deps:
	@scripts/install-deps.sh

build: deps
	$(SWIFT) build

# The Swift runtime and Foundation are linked in, so the installed binary needs no toolchain
# on the node (only libc, libsqlite3 and libsystemd).
RELEASE_FLAGS := -c release --static-swift-stdlib

release: deps
	$(SWIFT) build $(RELEASE_FLAGS)

# Each run's test directories live under a directory of its own, which the leftover check
# after the suite looks at: a process a test left behind fails the run.
test: deps
	scripts/python-clients.sh >/dev/null
	@root=$$(mktemp -d /tmp/vpsgw-run-XXXXXX) && \
	  VPSGW_TEST_ROOT=$$root SWIFT_BACKTRACE=enable=no $(SWIFT) test; status=$$?; \
	  scripts/check-no-leftovers.sh "$$root" || status=1; \
	  rm -rf "$$root"; exit $$status
	scripts/systemd-test.sh --if-possible
	scripts/fuzz.sh --seconds 60

fuzz: deps
	scripts/fuzz.sh --seconds 600

systemd-test: deps
	scripts/systemd-test.sh

run: deps
	scripts/run-local.sh

bench: deps
	scripts/bench.sh

proto:
	@command -v protoc >/dev/null || { echo "protoc is missing: apt-get install -y protobuf-compiler" >&2; exit 1; }
	cd tools/protoc-plugins && $(SWIFT) build -c release --scratch-path ../../.build-protoc --product protoc-gen-swift
	cd tools/protoc-plugins && $(SWIFT) build -c release --scratch-path ../../.build-protoc --product protoc-gen-grpc-swift-2
	rm -f $(GENERATED)/*.swift
	protoc -I proto $(PROTOS) \
	  --plugin=protoc-gen-swift=$(PROTOC_PLUGINS)/protoc-gen-swift \
	  --swift_out=$(GENERATED) --swift_opt=Visibility=Public,FileNaming=DropPath,UseAccessLevelOnImports=true
	protoc -I proto $(PROTOS) \
	  --plugin=protoc-gen-grpc-swift-2=$(PROTOC_PLUGINS)/protoc-gen-grpc-swift-2 \
	  --grpc-swift-2_out=$(GENERATED) --grpc-swift-2_opt=Visibility=Public,FileNaming=DropPath,Server=true,Client=true,UseAccessLevelOnImports=true

# Regenerates and fails when the committed code differs from what proto/ produces.
check-generated: proto
	git diff --exit-code -- $(GENERATED)

# The binary finds its migrations at ../share/vps-gateway/migrations relative to itself.
# Units get ExecStart= paths under $(PREFIX). An existing /etc/vps-gateway/vps-gateway.yaml is
# left alone; the examples are always in share/vps-gateway/examples.
install: release
	install -D -m 0755 "$$($(SWIFT) build $(RELEASE_FLAGS) --show-bin-path)/vps-gateway" "$(DESTDIR)$(PREFIX)/bin/vps-gateway"
	install -d "$(DESTDIR)$(PREFIX)/share/vps-gateway/migrations" "$(DESTDIR)$(PREFIX)/share/vps-gateway/examples" \
	  "$(DESTDIR)$(PREFIX)/share/doc/vps-gateway" "$(DESTDIR)$(UNITDIR)" "$(DESTDIR)$(SYSUSERSDIR)" "$(DESTDIR)$(SYSCONFDIR)/vps-gateway"
	install -m 0644 migrations/*.sql "$(DESTDIR)$(PREFIX)/share/vps-gateway/migrations/"
	install -m 0644 examples/*.yaml "$(DESTDIR)$(PREFIX)/share/vps-gateway/examples/"
	install -m 0644 README.md "$(DESTDIR)$(PREFIX)/share/doc/vps-gateway/README.md"
	for unit in vps-gateway.service vps-gateway-worker@.service; do \
	  sed -e 's|/usr/local/|$(PREFIX)/|g' -e 's|/etc/vps-gateway/|$(SYSCONFDIR)/vps-gateway/|g' "units/$$unit" >"$(DESTDIR)$(UNITDIR)/$$unit"; \
	  chmod 0644 "$(DESTDIR)$(UNITDIR)/$$unit"; \
	done
	install -m 0644 units/vps-gateway.sysusers "$(DESTDIR)$(SYSUSERSDIR)/vps-gateway.conf"
	[ -e "$(DESTDIR)$(SYSCONFDIR)/vps-gateway/vps-gateway.yaml" ] || \
	  sed 's|/etc/vps-gateway/|$(SYSCONFDIR)/vps-gateway/|g' examples/production.yaml >"$(DESTDIR)$(SYSCONFDIR)/vps-gateway/vps-gateway.yaml"
	if [ -z "$(DESTDIR)" ] && command -v systemd-sysusers >/dev/null; then systemd-sysusers "$(SYSUSERSDIR)/vps-gateway.conf"; fi
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@[ -e "$(DESTDIR)$(SYSCONFDIR)/vps-gateway/api-secret" ] || echo "next: write the shared secret to $(SYSCONFDIR)/vps-gateway/api-secret (mode 0600), edit $(SYSCONFDIR)/vps-gateway/vps-gateway.yaml, then systemctl enable --now vps-gateway"

# Lints the units as installed (into a temp DESTDIR): any systemd-analyze output is a failure.
verify-units: deps
	scripts/verify-units.sh

clean:
	rm -rf .build .build-protoc .build-release
