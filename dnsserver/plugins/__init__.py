"""Plugins, one module each, named as in CoreDNS; each has a `setup` (Corefile → plugin)."""
