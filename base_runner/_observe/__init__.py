"""What watches the parts: metrics, tracing, the access line, the event-loop watchdog."""
