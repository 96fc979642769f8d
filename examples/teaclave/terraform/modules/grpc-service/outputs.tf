output "url" {
  description = "The service URL (https://…run.app)."
  value       = google_cloud_run_v2_service.service.uri
}

output "grpc_target" {
  description = "host:port for gRPC clients (TLS on 443)."
  value       = "${trimprefix(google_cloud_run_v2_service.service.uri, "https://")}:443"
}

output "service_account_email" {
  description = "The service's own service account."
  value       = google_service_account.service.email
}
