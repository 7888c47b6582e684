##@ Terraform provider

.PHONY: tofu
tofu: ## Build (once, cached by tools/tofu/go.sum) the pinned OpenTofu CLI and print its path
	@scripts/build-tofu

.PHONY: provider-docs
provider-docs: ## Regenerate docs/{index.md,resources,data-sources} with tfplugindocs
	scripts/gen-provider-docs

.PHONY: provider-docs-check
provider-docs-check: ## Fail when the committed provider docs differ from the schema and examples/
	scripts/gen-provider-docs --check

.PHONY: test-provider
test-provider: ## Provider acceptance tests: real OpenTofu + real agent + real libvirtd (TF_ACC set by the tests)
	TF_ACC=1 TF_ACC_TERRAFORM_PATH="$$(scripts/build-tofu)" $(GO) test $(GOTEST_FLAGS) -count=1 -v ./provider/ ./testenv/agent/

.PHONY: bench-provider
bench-provider: ## `tofu plan` of 200 resources against one agent (docs/benchmarks.md, "Terraform provider")
	TF_ACC=1 TF_ACC_TERRAFORM_PATH="$$(scripts/build-tofu)" $(GO) test -run '^$$' -bench Plan200 -benchtime 5x -timeout 30m ./provider/

.PHONY: bench-provider-scale
bench-provider-scale: ## tofu apply/plan/destroy of 50 running and 200 stopped VMs at -parallelism=50, GetVM latency during the apply (docs/benchmarks.md)
	TF_ACC=1 TF_ACC_TERRAFORM_PATH="$$(scripts/build-tofu)" $(GO) test -run '^$$' -bench Scale -benchtime 1x -timeout 60m ./provider/
