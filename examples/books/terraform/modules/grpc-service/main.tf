# One gRPC service on Cloud Run, as every scaffold neuron deploys it. Neuron Terraform calls
# this module, so a fix here reaches every neuron.

locals {
  # Service account ids are 6-30 characters.
  account_id = substr("run-${var.service_name}", 0, 30)
  port       = 8080
  ingress = {
    "all"                               = "INGRESS_TRAFFIC_ALL"
    "internal"                          = "INGRESS_TRAFFIC_INTERNAL_ONLY"
    "internal-and-cloud-load-balancing" = "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
  }
  # Concurrency and workers are chosen together: Cloud Run sends at most var.concurrency
  # calls at once; the server admits as many (GRPC_MAX_CONCURRENT_RPCS) and runs two more
  # worker threads (GRPC_MAX_WORKERS), so a liveness probe or a refusal always finds a free
  # worker even when every admitted call waits on a slow database.
  grpc_env = var.protocol == "grpc" ? {
    GRPC_MAX_CONCURRENT_RPCS = tostring(var.concurrency)
    GRPC_MAX_WORKERS         = tostring(var.concurrency + 2)
  } : {}
  database_env = var.firestore_database == "" ? {} : { FIRESTORE_DATABASE = var.firestore_database }
  # Spans go to Cloud Trace (scaffold_runtime.tracing); var.env may override, e.g. TRACE_SAMPLE_RATIO.
  tracing_env = var.tracing ? { TRACING = "cloud-trace" } : {}
}

resource "google_service_account" "service" {
  project      = var.project_id
  account_id   = trimsuffix(local.account_id, "-")
  display_name = "Cloud Run service ${var.service_name}"
}

# Extra project-level roles (none by default).
resource "google_project_iam_member" "roles" {
  for_each = toset(var.project_roles)
  project  = var.project_id
  role     = each.value
  member   = "serviceAccount:${google_service_account.service.email}"
}

# Writing spans to Cloud Trace, when tracing is on.
resource "google_project_iam_member" "trace_agent" {
  count   = var.tracing ? 1 : 0
  project = var.project_id
  role    = "roles/cloudtrace.agent"
  member  = "serviceAccount:${google_service_account.service.email}"
}

# The service's own Firestore database: neurons never share documents, even when their
# resources have the same pattern (books/{book} in two neurons are two collections).
resource "google_firestore_database" "own" {
  count                   = var.firestore_database != "" && var.firestore_database_create ? 1 : 0
  project                 = var.project_id
  name                    = var.firestore_database
  location_id             = var.firestore_location
  type                    = "FIRESTORE_NATIVE"
  delete_protection_state = var.deletion_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  deletion_policy         = var.deletion_protection ? "ABANDON" : "DELETE"
}

# Read and write that database only: roles/datastore.user under an IAM condition on the
# database's resource name, so the service account cannot reach another neuron's data.
resource "google_project_iam_member" "firestore" {
  count   = var.firestore_database == "" ? 0 : 1
  project = var.project_id
  role    = "roles/datastore.user"
  member  = "serviceAccount:${google_service_account.service.email}"
  condition {
    title       = "only-database-${var.firestore_database}"
    description = "Firestore database ${var.firestore_database} of ${var.service_name} only."
    expression  = "resource.name == \"projects/${var.project_id}/databases/${var.firestore_database}\""
  }
}

# Each secret the service reads is granted on that secret alone.
resource "google_secret_manager_secret_iam_member" "secret_access" {
  for_each  = toset([for s in values(var.secret_env) : s.secret])
  project   = var.project_id
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.service.email}"
}

resource "google_cloud_run_v2_service" "service" {
  name                = var.service_name
  project             = var.project_id
  location            = var.region
  ingress             = local.ingress[var.ingress]
  deletion_protection = var.deletion_protection

  template {
    service_account = google_service_account.service.email

    # Egress through a VPC (for a caller of an internal-ingress service, e.g. the gateway):
    # Cloud Run counts calls to run.app URLs as internal only when they leave through a VPC.
    dynamic "vpc_access" {
      for_each = var.vpc_egress == null ? [] : [var.vpc_egress]
      content {
        egress = "ALL_TRAFFIC"
        network_interfaces {
          network    = vpc_access.value.network
          subnetwork = vpc_access.value.subnetwork
        }
      }
    }
    timeout                          = "${var.timeout_seconds}s"
    max_instance_request_concurrency = var.concurrency

    scaling {
      min_instance_count = var.min_instances
      max_instance_count = var.max_instances
    }

    containers {
      image   = var.image
      command = length(var.command) > 0 ? var.command : null

      # "h2c": HTTP/2 without TLS from Cloud Run's front end to the container, which gRPC
      # (and its streaming calls) needs end to end. The JSON gateway speaks HTTP/1.1.
      ports {
        name           = var.protocol == "grpc" ? "h2c" : "http1"
        container_port = local.port
      }

      resources {
        limits = {
          cpu    = var.cpu
          memory = var.memory
        }
        cpu_idle          = true
        startup_cpu_boost = true
      }

      env {
        name  = "GOOGLE_CLOUD_PROJECT"
        value = var.project_id
      }

      dynamic "env" {
        for_each = merge(local.grpc_env, local.database_env, local.tracing_env, var.env)
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = var.secret_env
        content {
          name = env.key
          value_source {
            secret_key_ref {
              secret  = env.value.secret
              version = env.value.version
            }
          }
        }
      }

      # gRPC: both probes ask the gRPC health service about the whole server ("" service
      # name), which turns SERVING once every service is registered and NOT_SERVING while
      # draining. HTTP (the gateway): a TCP startup probe.
      startup_probe {
        dynamic "grpc" {
          for_each = var.protocol == "grpc" ? [1] : []
          content {
            port = local.port
          }
        }
        dynamic "tcp_socket" {
          for_each = var.protocol == "http" ? [1] : []
          content {
            port = local.port
          }
        }
        initial_delay_seconds = 0
        period_seconds        = 1
        timeout_seconds       = 1
        failure_threshold     = 30
      }

      dynamic "liveness_probe" {
        for_each = var.protocol == "grpc" ? [1] : []
        content {
          grpc {
            port = local.port
          }
          period_seconds    = 30
          timeout_seconds   = 5
          failure_threshold = 3
        }
      }
    }
  }

  depends_on = [google_project_iam_member.roles, google_project_iam_member.firestore,
  google_secret_manager_secret_iam_member.secret_access, google_project_iam_member.trace_agent]
}

resource "google_cloud_run_v2_service_iam_member" "invokers" {
  for_each = toset(var.invoker_members)
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.service.name
  role     = "roles/run.invoker"
  member   = each.value
}

# Public only when asked for: allow_unauthenticated defaults to false in every neuron.
resource "google_cloud_run_v2_service_iam_member" "public" {
  count    = var.allow_unauthenticated ? 1 : 0
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.service.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}
