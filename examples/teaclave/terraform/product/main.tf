# Product-level resources, applied once per project before any neuron:
#   terraform -chdir=terraform/product init
#   terraform -chdir=terraform/product apply -var project_id=P -var region=R
# Then each neuron: scaffold neuron deploy NAME --project P --region R

terraform {
  required_version = ">= 1.5"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0, < 8.0"
    }
  }
  # State in a GCS bucket (recommended for teams): create the bucket, then uncomment.
  # backend "gcs" {
  #   bucket = "YOUR-STATE-BUCKET"
  #   prefix = "product"
  # }
}

provider "google" {
  project = var.project_id
  region  = var.region
}

locals {
  services = toset([
    "run.googleapis.com",
    "firestore.googleapis.com",
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "iam.googleapis.com",
    "secretmanager.googleapis.com",
    "cloudresourcemanager.googleapis.com", # project number: neurons that call neurons build Cloud Run URLs from it
  ])
}

resource "google_project_service" "apis" {
  for_each           = local.services
  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

resource "google_firestore_database" "default" {
  project                 = var.project_id
  name                    = "(default)"
  location_id             = var.firestore_location
  type                    = "FIRESTORE_NATIVE"
  delete_protection_state = "DELETE_PROTECTION_ENABLED"
  deletion_policy         = "ABANDON"
  depends_on              = [google_project_service.apis]
}

resource "google_artifact_registry_repository" "neurons" {
  # checkov:skip=CKV_GCP_84: images are encrypted with Google-managed keys; set kms_key_name for CMEK
  project       = var.project_id
  location      = var.region
  repository_id = var.repository_id
  format        = "DOCKER"
  description   = "Container images of this product's neurons."
  depends_on    = [google_project_service.apis]
}
