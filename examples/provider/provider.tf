# Every setting can also come from the environment: DEBVISOR_ENDPOINT, DEBVISOR_CA, DEBVISOR_CERT,
# DEBVISOR_KEY (or DEBVISOR_CA_PEM, DEBVISOR_CERT_PEM, DEBVISOR_KEY_PEM), DEBVISOR_REQUEST_TIMEOUT…
terraform {
  required_providers {
    debvisor = {
      source = "debvisor/debvisor"
    }
  }
}

provider "debvisor" {
  endpoint  = "node1.example.org:7443"
  ca_file   = "pki/ca.crt"     # dvctl pki init-ca
  cert_file = "pki/admin.crt"  # dvctl pki issue client admin --role admin
  key_file  = "pki/admin.key"

  request_timeout   = "30s"
  operation_timeout = "20m"
}
