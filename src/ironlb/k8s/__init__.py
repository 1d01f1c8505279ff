"""The only package that talks to the Kubernetes API (lightkube and httpx2 stay in here)."""
