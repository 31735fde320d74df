"""Sans-IO STUN/TURN codec: the wire format of RFC 8489, 5389, 3489, 5780, 8656 and 6062."""
