"""Value codecs: bytes stored in a container -> Python objects (and back)."""
