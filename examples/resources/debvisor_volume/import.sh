# Volumes are imported as POOL/NAME.
terraform import debvisor_volume.data vms/web-data
