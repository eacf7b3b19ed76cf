"""The AI query layer: the read client, the questions API over HTTP, and the metrics catalog."""
