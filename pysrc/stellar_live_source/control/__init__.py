"""What the service tells control planes and the ``stellar.v1`` service's
callers about itself: its identity (``identity``), and the flowctl
registration and heartbeats (``flowctl``)."""
