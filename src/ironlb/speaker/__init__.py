"""The speaker: wires election, layer 2, BGP and membership to the Kubernetes API."""
