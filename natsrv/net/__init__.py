"""The trio shell: sockets, timers and tasks around the sans-IO core."""
