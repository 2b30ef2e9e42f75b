"""Running the service: configuration and the other operational concerns."""
