"""scaffold: turn a gRPC API design into a service ready for Google Cloud Run.

The pipeline: ``.proto`` -> protoc (grpcio-tools, descriptor set) -> frozen view model
(:mod:`generator.schema`) -> Jinja2 templates (:mod:`generator.render`) -> an
ownership-aware writer (:mod:`generator.writer`).

This module stays import-light: ``scaffold --help`` must not pay for protobuf or Jinja.
"""

__version__ = "0.3.0"
