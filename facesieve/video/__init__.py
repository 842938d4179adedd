"""Video face extraction."""
