"""Test doubles: loopback servers that speak a real service's API, for the real client libraries."""
