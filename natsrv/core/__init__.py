"""Sans-IO server behaviour: (message, five_tuple, now) -> effects."""
