##@ Node lifecycle (QEMU end to end)

SOAK_CUTS ?= 200

.PHONY: test-e2e
test-e2e: ## Node lifecycle under QEMU: boot, OpenTofu against the node, upgrades and rollbacks, power cuts (part of `make test`)
	$(GO) test $(GOTEST_FLAGS) -count=1 -v ./e2e/

.PHONY: soak
soak: ## Long soak outside CI: SOAK_CUTS (default 200) random power cuts during slot writes and env flips
	DEBVISOR_SOAK_CUTS=$(SOAK_CUTS) $(GO) test -timeout 12h -count=1 -v -run 'TestSecondNode/PowerCuts' ./e2e/

.PHONY: bench-upgrade
bench-upgrade: ## Slot write vs dd, agent memory during a 1 GiB upgrade (docs/benchmarks.md)
	$(GO) test -run '^$$' -bench Upgrade -benchtime 1x -timeout 30m ./nodeagent/agentcmd/
