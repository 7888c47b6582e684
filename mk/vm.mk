##@ VMs and storage

.PHONY: test-vm
test-vm: ## VM and storage tests: real libvirtd (started if needed), real QEMU guests, virsh as witness
	$(GO) test $(GOTEST_FLAGS) -count=1 ./nodeagent/vm/ ./nodeagent/storage/ ./nodeagent/libvirtconn/ ./testenv/libvirtd/ ./nodeagent/server/

.PHONY: golden-vm
golden-vm: ## Rewrite the golden pool/volume/domain XML files (each is still checked with virt-xml-validate)
	$(GO) test -count=1 ./nodeagent/storage/ ./nodeagent/vm/ -run 'XML' -update

.PHONY: bench-vm
bench-vm: ## Create+start+delete latency per VM and 50 parallel creates, through a real agent (docs/benchmarks.md)
	$(GO) test -run '^$$' -bench 'CreateStartDelete' -benchtime 20x -timeout 30m ./nodeagent/vm/
	$(GO) test -run '^$$' -bench 'ParallelCreate50' -benchtime 2x -timeout 30m ./nodeagent/vm/
