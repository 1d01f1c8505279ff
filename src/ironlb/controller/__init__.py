"""The controller: wires core allocation to the Kubernetes API."""
