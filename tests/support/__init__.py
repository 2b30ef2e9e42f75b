"""Test support: real storage endpoints (moto, the GCS emulator) started for
the session, and a fault-injecting HTTP proxy to put in front of them."""
