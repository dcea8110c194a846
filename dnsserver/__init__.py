"""dnsserver: a cluster DNS server for Kubernetes that runs CoreDNS Corefiles."""

__version__ = "0.1.0"
