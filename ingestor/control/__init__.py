"""The control plane over HTTP: the control API and the connector page it serves."""
