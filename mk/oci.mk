##@ OCI distribution and signing

.PHONY: cosign
cosign: ## Build (once, cached by tools/cosign/go.sum) the pinned cosign CLI and print its path
	@scripts/build-cosign

.PHONY: test-oci
test-oci: ## OCI tests: in-process registry, docker-registry, skopeo and the pinned cosign
	$(GO) test $(GOTEST_FLAGS) -count=1 ./osimage/... ./imagebuilder/cli/

.PHONY: bench-oci
bench-oci: ## Push and pull of a 1 GiB slot artifact vs skopeo copy, with peak memory (docs/benchmarks.md)
	$(GO) test -run '^$$' -bench OCISlot1GiB -benchtime 1x -timeout 30m ./imagebuilder/cli/
