variable "project_id" {
  description = "Google Cloud project the service runs in."
  type        = string
}

variable "region" {
  description = "Cloud Run region, e.g. europe-west1."
  type        = string
}

variable "service_name" {
  description = "Cloud Run service name (lower-case letters, digits and hyphens)."
  type        = string
  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$", var.service_name))
    error_message = "service_name must be 1-49 lower-case letters, digits or hyphens, starting with a letter."
  }
}

variable "image" {
  description = "Container image, by digest or tag."
  type        = string
}

variable "min_instances" {
  description = "Instances kept warm (0 scales to zero)."
  type        = number
}

variable "max_instances" {
  description = "Upper bound on instances."
  type        = number
}

variable "concurrency" {
  description = "Requests one instance serves at once."
  type        = number
}

variable "cpu" {
  description = "CPU limit per instance, e.g. \"1\"."
  type        = string
}

variable "memory" {
  description = "Memory limit per instance, e.g. \"512Mi\"."
  type        = string
}

variable "timeout_seconds" {
  description = "Request timeout in seconds."
  type        = number
}

variable "env" {
  description = "Plain environment variables."
  type        = map(string)
}

variable "secret_env" {
  description = "Environment variables read from Secret Manager: name => { secret, version }."
  type = map(object({
    secret  = string
    version = string
  }))
}

variable "allow_unauthenticated" {
  description = "Grant roles/run.invoker to allUsers (a public service)."
  type        = bool
}

variable "invoker_members" {
  description = "Members granted roles/run.invoker, e.g. serviceAccount:caller@p.iam.gserviceaccount.com."
  type        = list(string)
}

variable "deletion_protection" {
  description = "Refuse `terraform destroy` of the service."
  type        = bool
  default     = true
}

variable "protocol" {
  description = "\"grpc\": HTTP/2 end to end (h2c) with gRPC health probes; \"http\": HTTP/1.1 (the JSON gateway)."
  type        = string
  default     = "grpc"
  validation {
    condition     = contains(["grpc", "http"], var.protocol)
    error_message = "protocol must be grpc or http."
  }
}

variable "command" {
  description = "Container command; empty keeps the image's CMD (the gRPC server)."
  type        = list(string)
  default     = []
}

variable "project_roles" {
  description = "Extra project roles of the service's own service account (Firestore access comes with firestore_database)."
  type        = list(string)
  default     = []
}

variable "firestore_database" {
  description = "The service's own Firestore database, created here; roles/datastore.user is granted on it alone. \"\": none."
  type        = string
  default     = ""
  validation {
    condition     = var.firestore_database == "" || can(regex("^[a-z][a-z0-9-]{2,61}[a-z0-9]$", var.firestore_database))
    error_message = "firestore_database must be 4-63 lower-case letters, digits or hyphens, starting with a letter."
  }
}

variable "firestore_database_create" {
  description = "Create firestore_database here; false when it is another service's (the in-process gateway uses its neuron's): access only."
  type        = bool
  default     = true
}

variable "firestore_location" {
  description = "Location of firestore_database: a region (europe-west1) or a multi-region (eur3, nam5)."
  type        = string
  default     = "eur3"
}

variable "ingress" {
  description = "Who can reach the service: all, internal, or internal-and-cloud-load-balancing."
  type        = string
  default     = "all"
  validation {
    condition     = contains(["all", "internal", "internal-and-cloud-load-balancing"], var.ingress)
    error_message = "ingress must be all, internal or internal-and-cloud-load-balancing."
  }
}

variable "vpc_egress" {
  description = "Send all egress through this VPC network and subnetwork (Direct VPC egress); null: none."
  type = object({
    network    = string
    subnetwork = string
  })
  default = null
}

variable "tracing" {
  description = "Export traces to Cloud Trace: sets TRACING=cloud-trace and grants the service account roles/cloudtrace.agent."
  type        = bool
  default     = true
}
