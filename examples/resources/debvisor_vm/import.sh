# VMs are imported by name.
terraform import debvisor_vm.web web
