"""One router per file; each module exposes `router`."""
