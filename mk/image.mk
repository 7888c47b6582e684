##@ OS image
IMAGE_SPEC ?=
IMAGE_OUT  ?= out/image

.PHONY: image
image: build ## Build the default OS image (or IMAGE_SPEC=file) into IMAGE_OUT (raw, qcow2, manifest)
	$(BINDIR)/debvisor-image build $(IMAGE_SPEC) -o $(IMAGE_OUT)
	$(BINDIR)/debvisor-image inspect $(IMAGE_OUT)/debvisor.raw

.PHONY: test-image
test-image: ## Image builder and boot package tests only, including the QEMU boots
	$(GO) test $(GOTEST_FLAGS) -v ./osimage/... ./boot/... ./internal/qemu/... ./imagebuilder/... ./nodeagent/firstboot/...

.PHONY: quickstart-image
quickstart-image: image ## Boot the default image in QEMU with fresh PKI; prints how to reach the agent and the console
	$(BINDIR)/debvisor-image quickstart --image $(IMAGE_OUT)/debvisor.raw --dvctl $(BINDIR)/dvctl --dir $(IMAGE_OUT)/quickstart

.PHONY: bench-image
bench-image: build ## Image build from a cached rootfs vs mksquashfs alone, and boot-to-agent time (docs/benchmarks.md)
	$(GO) test -run '^$$' -bench 'Image' -benchtime 1x -timeout 60m ./imagebuilder/
