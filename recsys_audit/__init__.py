"""recsys-audit: production-readiness audits of recsys-service deployments."""

__version__ = "0.1.0"
