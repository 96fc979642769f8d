variable "project_id" {
  description = "Google Cloud project of the product."
  type        = string
}

variable "region" {
  description = "Region of the Artifact Registry repository and the neurons, e.g. europe-west1."
  type        = string
  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must look like europe-west1."
  }
}

variable "firestore_location" {
  description = "Firestore location: a region (europe-west1) or a multi-region (eur3, nam5)."
  type        = string
  default     = "eur3"
}

variable "repository_id" {
  description = "Artifact Registry Docker repository for neuron images."
  type        = string
  default     = "neurons"
}
