"""The running service: the application and its lifecycle, the gRPC service,
and the HTTP health endpoint."""
