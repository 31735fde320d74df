"""natsrv: a STUN/TURN NAT-traversal server and NAT-type classifier, built on trio."""

__version__ = "0.1.0"
