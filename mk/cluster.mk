##@ Cluster formation

.PHONY: test-cluster
test-cluster: ## Cluster tests: real agents in network namespaces on a bridge (root), mDNS, join, forwarding, failure detection
	$(GO) test $(GOTEST_FLAGS) -count=1 ./api/rules/ ./internal/pki/ ./nodeagent/discovery/ ./nodeagent/cluster/ ./nodeagent/agentcmd/ -run 'Cluster|Join|Token|Record|Advertise|Bootstrap|Formation|Enroll|CSR|CAHash|FailureDetection'
	$(GO) test $(GOTEST_FLAGS) -count=1 ./nodeagent/server/ -run 'Cluster|Join|Forward|Public|RoleTable'

.PHONY: bench-cluster
bench-cluster: ## Time for 5 and 10 agents to converge, and from a node stopping to its removal everywhere (docs/benchmarks.md)
	$(GO) test -run '^$$' -bench Cluster -benchtime 5x -timeout 30m ./nodeagent/cluster/
