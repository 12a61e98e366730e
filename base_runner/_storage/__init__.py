"""The database and the data dir: engine and driver, write gate, the file's checks and repairs, durable writes."""
