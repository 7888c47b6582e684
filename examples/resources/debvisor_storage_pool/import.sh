# Storage pools are imported by name.
terraform import debvisor_storage_pool.vms vms
