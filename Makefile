# vps-gateway: build, test, run and regenerate. `make help` lists the targets.
SHELL := /bin/bash
PREFIX ?= /usr/local
DESTDIR ?=
SWIFT ?= swift
PROTOC_PLUGINS := .build-protoc/release
GENERATED := Sources/GatewayProtocol/Generated
PROTOS := proto/obiente/cloud/vpsgateway/v1/gateway.proto \
          proto/obiente/cloud/vps/v1/find_vps_by_lease.proto \
          proto/vpsgateway/admin/v1/admin.proto

.PHONY: help deps build release test run proto check-generated bench install clean

help:
	@echo "make run      - build, then run a gateway with three environment workers on sample inventories and look up a VPS"
	@echo "make test     - install what the tests need, build and run every test (what .ci/run does)"
	@echo "make build    - debug build;  make release - release build"
	@echo "make bench    - release build, then the benchmark table of the README"
	@echo "make proto    - regenerate $(GENERATED) from proto/ (needs protoc; builds the plugins)"
	@echo "make install  - release build, then install to \$$DESTDIR\$$PREFIX (default /usr/local): bin/vps-gateway, share/vps-gateway/migrations"

# Debian packages the build and the tests need. Installs them when run as root, otherwise
# prints the command to run.
deps:
	@scripts/install-deps.sh

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

test: deps
	SWIFT_BACKTRACE=enable=no $(SWIFT) test

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
install: release
	install -D -m 0755 "$$($(SWIFT) build -c release --show-bin-path)/vps-gateway" "$(DESTDIR)$(PREFIX)/bin/vps-gateway"
	install -d "$(DESTDIR)$(PREFIX)/share/vps-gateway/migrations"
	install -m 0644 migrations/*.sql "$(DESTDIR)$(PREFIX)/share/vps-gateway/migrations/"

clean:
	rm -rf .build .build-protoc .build-release
