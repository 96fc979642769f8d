output "image_prefix" {
  description = "Prefix of neuron image names: <prefix>/<neuron>:<tag>."
  value       = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.neurons.repository_id}"
}
